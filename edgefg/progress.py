"""Progress for long work, always on stderr (stdout carries results only); quiet when EDGEFG_QUIET=1.

* :func:`track` — a bar with count, elapsed time and ETA over an iterable (rich).
* :func:`activity` — one opaque call (a converter, NNCF's accuracy control): a spinner with the
  elapsed time and whatever the step reports through ``update``; no ETA, since none can be known.
* :func:`stdout_to_stderr` — run a third-party call whose prints/progress bars would land on stdout.

On a terminal they draw live; elsewhere (CI logs, pipes) a step that runs longer than
``EDGEFG_PROGRESS_EVERY`` seconds (default 30) prints a status line (count, elapsed, ETA) to stderr
at that interval and a last one when it ends, so a long step is never silent and a short one adds nothing.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _quiet() -> bool:
    return os.environ.get("EDGEFG_QUIET") == "1"


def _every() -> float:
    try:
        return float(os.environ.get("EDGEFG_PROGRESS_EVERY", "30"))
    except ValueError:
        return 30.0


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class _Lines:
    """Plain progress lines for a non-terminal stderr. A step shorter than the interval prints
    nothing; a longer one prints its status once per interval (a background timer, so an opaque
    call is reported too) and a last line when it ends."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total, self.start = description, total, time.monotonic()
        self.done, self.note, self.printed = 0, "", False
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, daemon=True)
        self._timer.start()

    def _tick(self) -> None:
        while not self._stop.wait(_every()):
            self.emit(self.status() + (f" — {self.note}" if self.note else ""))

    def emit(self, state: str) -> None:
        self.printed = True
        print(f"{self.description}: {state}", file=sys.stderr, flush=True)

    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.total:
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            return f"{self.done}/{self.total} ({100 * self.done / self.total:.0f} %), {_clock(elapsed)} elapsed" + (
                f", ETA {_clock(eta)}" if eta is not None else "")
        return f"running, {_clock(elapsed)} elapsed"

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note

    def finish(self) -> None:
        self._stop.set()
        if self.printed:
            self.emit(f"done in {_clock(time.monotonic() - self.start)}")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (count, elapsed, ETA) on stderr."""
    if _quiet():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    console = _console()
    if not console.is_terminal:
        lines = _Lines(description, total)
        try:
            for item in items:
                yield item
                lines.advance()
        finally:
            lines.finish()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def activity(description: str) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time for one long call; yields ``update(note)`` for what it is doing now."""
    if _quiet():
        yield lambda note: None
        return
    console = _console()
    if not console.is_terminal:
        lines = _Lines(description, None)
        try:
            yield lambda note: lines.advance(0, note)
        finally:
            lines.finish()
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=None, note="")
        yield lambda note: bar.update(task, note=note)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send Python-level prints of a third-party call (NNCF's bars, exporter chatter) to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def native_logs_silenced() -> Iterator[None]:
    """Mute what native libraries write straight to file descriptor 2 (TensorFlow/LiteRT's absl
    logs: "oneDNN custom operations are on…", "Created TensorFlow Lite XNNPACK delegate…"), which no
    Python setting reaches. Python's own stderr (edgefg's logs and progress) keeps working, on a
    duplicate of the real descriptor. ``-vv`` (EDGEFG_NATIVE_LOGS=1) lets everything through."""
    if os.environ.get("EDGEFG_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    python_stderr = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        yield
    finally:
        try:
            sys.stderr.flush()
            if sys.stderr is not python_stderr:
                sys.stderr.close()
        finally:
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
