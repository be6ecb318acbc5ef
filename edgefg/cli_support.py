"""What every command module shares — the error handler (one-line messages, exit codes), the console
and printing a Markdown report — apart from the root ``edgefg`` group, so a lazily imported command
module (``tune``, ``compare``, ``build-engine`` …) does not import the module that imports it."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgefg.errors import EdgefgError


def console():
    """A rich console for results on stdout (160 columns when not a terminal)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for tables
        console = Console(width=160)
    return console


def run_printing_report(work: Callable[[], Any], report: Path, console) -> None:
    """Run ``work`` and print the Markdown report it writes — also when a budget check fails
    (:class:`CheckFailed` is raised after the report with the best result is written)."""
    from edgefg.errors import CheckFailed

    try:
        work()
    except CheckFailed:
        if report.is_file():
            console.print(report.read_text(encoding="utf-8"), markup=False, highlight=False)
        raise
    console.print(report.read_text(encoding="utf-8"), markup=False, highlight=False)


# C0/C1 control characters (ESC starts terminal sequences; CR overwrites the line) and the Unicode
# bidirectional overrides that reorder what a terminal shows; newline and tab stay
_UNPRINTABLE = {c for c in range(0x20) if c not in (0x09, 0x0A)} | set(range(0x7F, 0xA0)) | {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def terminal_safe(text: object) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\u202e``): what a file or a network
    peer wrote (a signature's key id, a label, a path) cannot paint the terminal or fake a verdict."""
    s = str(text)
    if not any(ord(c) in _UNPRINTABLE for c in s):
        return s
    return "".join((f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") if ord(c) in _UNPRINTABLE else c for c in s)


def error_lines(exc: EdgefgError) -> list[str]:
    """The ``error:``/``hint:`` lines of ``exc``: secrets masked, control characters escaped."""
    from edgefg.trust.secrets import mask

    return [f"error: {terminal_safe(mask(exc.message))}"] + ([f"hint: {terminal_safe(mask(exc.hint))}"] if exc.hint else [])


def handle_errors(fn: Callable) -> Callable:
    """Turn edgefg errors into one-line messages with the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgefgError as exc:
            for line in error_lines(exc):  # no password/token, no terminal escape in an error line
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
