"""What every command module shares — the error handler (one-line messages, exit codes), the console
and printing a Markdown report — apart from the root ``edgefg`` group, so a lazily imported command
module (``tune``, ``compare``, ``build-engine`` …) does not import the module that imports it."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

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


def handle_errors(fn: Callable) -> Callable:
    """Turn edgefg errors into one-line messages with the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgefgError as exc:
            from edgefg.trust.secrets import mask

            click.echo(f"error: {mask(exc.message)}", err=True)  # no password/token in an error line
            if exc.hint:
                click.echo(f"hint: {mask(exc.hint)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
