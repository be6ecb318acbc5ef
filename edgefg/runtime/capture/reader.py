"""Capture on its own thread, with reconnection, stall detection and a bounded frame buffer.

* Live sources (cameras, streams) feed a :class:`FrameBuffer` that keeps only the newest frames
  (capacity 1 = a latest-frame slot; the micro-batch size when batching): old frames are dropped
  and counted, so latency stays bounded when inference is slower than the camera.
* Files are read in order into a blocking buffer: nothing is dropped.
* A source that fails, ends (live only) or stalls (a read that has not returned within
  ``stall_timeout_s``) is reopened with exponential backoff, forever or up to ``max_retries``
  consecutive failures; each event is a structured JSON line (:class:`~edgefg.runtime.loop.events.EventLog`).

A stalled read cannot be interrupted safely (OpenCV captures are not thread-safe), so the stuck
reader thread is abandoned: it closes its own source whenever the read returns, and its frames are
ignored. URL sources also get FFMPEG open/read timeouts so such reads do return.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefg.errors import EdgefgError, SourceError
from edgefg.runtime.capture.sources import Frame, Source
from edgefg.runtime.loop.events import EventLog


@dataclass
class RetryPolicy:
    """Reopen policy for failing/stalling sources."""

    stall_timeout_s: float = 10.0  # a read that takes longer than this = a stalled source
    max_retries: int | None = None  # consecutive failed reopen attempts before giving up; None = forever
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0

    def delay(self, failures: int) -> float:
        return min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor ** max(0, failures - 1))


@dataclass
class Item:
    """A captured frame on its way to the main loop (``prepared`` set when preprocessed in capture)."""

    frame: Frame
    captured: float  # perf_counter when read
    read_ms: float
    prepared: np.ndarray | None = None
    prepare_ms: float = 0.0
    error: str | None = None  # why the frame cannot be used (corrupt), else None
    ready: float = 0.0  # perf_counter when handed to the buffer (read and, in capture, preprocessed)
    taken: float = 0.0  # perf_counter when the main loop took it: taken - ready is queueing


class FrameBuffer:
    """Bounded frame buffer: drop-oldest (live) or blocking (files). Thread-safe."""

    def __init__(self, capacity: int = 1, drop_oldest: bool = True) -> None:
        self.capacity = max(1, capacity)
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.on_put: Callable[[], None] | None = None  # e.g. wakes a multi-camera batcher

    def put(self, item: Item, stop: threading.Event | None = None) -> bool:
        """Add ``item``; False when the buffer was closed (or ``stop`` set while waiting)."""
        with self._cond:
            while not self.drop_oldest and len(self._items) >= self.capacity and not self._closed:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()
        return True

    def get_batch(self, n: int, timeout: float, fill_wait: float = 0.0) -> list[Item]:
        """Up to ``n`` items: wait ``timeout`` for the first, then up to ``fill_wait`` for more."""
        with self._cond:
            deadline = time.monotonic() + timeout
            while not self._items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            if fill_wait > 0 and n > 1:
                deadline = time.monotonic() + fill_wait
                while len(self._items) < n and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            out = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            self._cond.notify_all()
            return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.on_put is not None:
            self.on_put()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)


SourceFactory = Callable[[], Source]


class Capture:
    """Runs a source on a supervisor thread + a reader thread; frames land in ``buffer``.

    ``prepare`` (optional) runs on the reader thread for each good frame (pipelined preprocessing).
    After the source ends (files) or gives up, ``buffer`` is closed; ``error`` holds the fatal
    error, if any.
    """

    def __init__(self, first: Source | None, factory: SourceFactory, policy: RetryPolicy, events: EventLog,
                 capacity: int = 1, loop: bool = False, prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.factory = factory
        self.policy = policy
        self.events = events
        self.loop = loop
        self.prepare = prepare
        self._first = first
        self.live = first.live if first is not None else True
        self.buffer = FrameBuffer(capacity, drop_oldest=self.live)
        self.stop_event = threading.Event()
        self.error: EdgefgError | None = None
        self.frames_read = 0
        self.skipped = 0  # undecodable frames (counted by sources) + frames whose prepare failed
        self.reconnects = 0
        self.stalls = 0
        self.last_frame_time: float | None = None  # time.time() of the last frame read (reported)
        self.last_frame_mono: float | None = None  # time.monotonic() of it (ages: a clock step cannot hide a stall)
        self.spec = first.name if first is not None else "?"  # for events: credentials redacted
        self.fps = first.fps if first is not None else None
        self._lock = threading.Lock()
        self._generation = 0
        self._opened_once = False
        self._rewinding = False
        self.initial_failures = 0  # 1 when the caller's first open already failed
        self.loops = 0  # --loop restarts of a file
        self._reading_since: float | None = None
        self._thread = threading.Thread(target=self._supervise, name="edgefg-capture", daemon=True)

    # -- public ----------------------------------------------------------------------------
    READER_EXIT_S = 2.0  # how long stop waits for a reader mid-frame (a hung network read is left behind)

    def start(self) -> Capture:
        self._thread.start()
        return self

    def stop(self, timeout: float = READER_EXIT_S + 1.0) -> None:
        self.stop_event.set()
        self.buffer.close()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def last_frame_age_s(self) -> float | None:
        """Seconds since the last frame, on the monotonic clock (None before the first)."""
        return None if self.last_frame_mono is None else round(time.monotonic() - self.last_frame_mono, 3)

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    # -- threads ---------------------------------------------------------------------------
    def _open(self, failures: int) -> Source | None:
        """Open (or reopen) the source, sleeping with backoff between failed attempts."""
        while not self.stop_event.is_set():
            if self._first is not None:
                src, self._first = self._first, None
                self._opened_once = True
                return src
            if failures:
                if self.policy.max_retries is not None and failures > self.policy.max_retries:
                    self.error = SourceError(
                        f"source '{self.spec}' could not be reopened after {self.policy.max_retries} retries",
                        "check the camera/stream; raise --max-retries or omit it to retry forever",
                    )
                    self.events.emit("source_gave_up", source=self.spec, retries=self.policy.max_retries)
                    return None
                delay = self.policy.delay(failures)
                self.events.emit("source_reconnect", source=self.spec, attempt=failures, delay_s=round(delay, 3))
                if self.stop_event.wait(delay):
                    return None
            try:
                src = self.factory()
            except EdgefgError as exc:
                failures += 1
                self.events.emit("source_open_failed", source=self.spec, attempt=failures, error=exc.message)
                continue
            except Exception as exc:  # a factory bug or library error: same policy
                failures += 1
                self.events.emit("source_open_failed", source=self.spec, attempt=failures, error=f"{type(exc).__name__}: {exc}")
                continue
            if self._rewinding:  # --loop over a file: not a reconnect
                self._rewinding = False
                self.loops += 1
                return src
            if self._opened_once:
                self.reconnects += 1
            self._opened_once = True
            self.events.emit("source_opened", source=self.spec, attempt=failures, live=src.live)
            return src
        return None

    def _supervise(self) -> None:
        failures = self.initial_failures
        try:
            while not self.stop_event.is_set():
                src = self._open(failures)
                if src is None:
                    return
                with self._lock:
                    self._generation += 1
                    gen = self._generation
                self.spec = src.name
                state: dict[str, Any] = {"frames": 0, "done": False, "reason": None, "ended": False}
                reader = threading.Thread(target=self._read, args=(gen, src, state), name=f"edgefg-reader-{gen}", daemon=True)
                reader.start()
                stalled = False
                while not self.stop_event.is_set():
                    reader.join(min(0.05, self.policy.stall_timeout_s / 4))
                    if not reader.is_alive():
                        break
                    since = self._reading_since
                    if since is not None and time.monotonic() - since > self.policy.stall_timeout_s:
                        stalled = True
                        self.stalls += 1
                        with self._lock:
                            self._generation += 1  # the stuck reader's frames are now ignored
                            self._reading_since = None
                        self.events.emit("source_stalled", source=self.spec, no_frame_for_s=self.policy.stall_timeout_s)
                        break
                if self.stop_event.is_set():
                    # let the reader finish its frame: a daemon thread still inside OpenCV/FFmpeg when the
                    # interpreter exits is unwound through C++ and aborts the process (SIGABRT, "exception not rethrown")
                    reader.join(self.READER_EXIT_S)
                    return
                if state.get("fatal") is not None:
                    self.error = state["fatal"]
                    self.events.emit("pipeline_error", source=self.spec, error=self.error.message)
                    return
                if state["frames"] > 0:
                    failures = 0
                if not src.reopenable:
                    if not state["ended"]:
                        self.error = SourceError(f"source '{self.spec}' failed: {state['reason']}", "it cannot be reopened")
                    self.events.emit("source_ended" if state["ended"] else "source_lost", source=self.spec, frames=state["frames"],
                                     **({} if state["ended"] else {"error": state["reason"]}))
                    return
                if state["ended"] and not stalled:
                    if not src.live and self.loop and state["frames"] > 0 and not src.end_note:
                        self._rewinding = True
                        continue  # --loop: reopen the file at once
                    self.events.emit("source_ended", source=self.spec, frames=state["frames"], **({"note": src.end_note} if src.end_note else {}))
                    if not src.live and not self.loop:
                        return
                elif not stalled:
                    self.events.emit("source_lost", source=self.spec, frames=state["frames"], error=state["reason"])
                failures += 1
        finally:
            self.buffer.close()

    def _read(self, gen: int, src: Source, state: dict[str, Any]) -> None:
        counted = 0
        try:
            it = iter(src)
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                self._reading_since = time.monotonic()
                try:
                    frame = next(it)
                except StopIteration:
                    state["ended"] = True
                    return
                t1 = time.perf_counter()
                if gen != self._generation:  # abandoned after a stall
                    return
                self._reading_since = None
                self.last_frame_time, self.last_frame_mono = time.time(), time.monotonic()
                self.frames_read += 1
                state["frames"] += 1
                self.skipped += src.skipped - counted
                counted = src.skipped
                item = Item(frame, t1, (t1 - t0) * 1e3)
                image = frame.image
                if image is None:
                    item.error = "undecodable frame"
                elif not _valid_image(image):
                    item.error = f"malformed frame (shape {getattr(image, 'shape', None)}, dtype {getattr(image, 'dtype', None)})"
                else:
                    if image.ndim == 2 or image.shape[2] == 1:
                        frame.image = image = _gray_to_bgr(image)
                    elif image.shape[2] == 4:
                        frame.image = image = image[:, :, :3]
                    if self.prepare is not None:
                        try:
                            item.prepared = self.prepare(image)
                        except EdgefgError as exc:  # a configuration error (e.g. ROI outside the frame): fatal
                            state["fatal"] = exc
                            return
                        except Exception as exc:
                            item.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
                        item.prepare_ms = (time.perf_counter() - t1) * 1e3
                item.ready = time.perf_counter()
                if not self.buffer.put(item, self.stop_event):
                    return
        except EdgefgError as exc:
            state["reason"] = exc.message
        except Exception as exc:  # any library error = a lost source, never a crash
            state["reason"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.skipped += src.skipped - counted
            if gen == self._generation:
                self._reading_since = None
            try:
                src.close()
            except Exception:
                pass


def _valid_image(image: Any) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim in (2, 3)
        and image.shape[0] >= 2
        and image.shape[1] >= 2
        and (image.ndim == 2 or image.shape[2] in (1, 3, 4))
    )


def _gray_to_bgr(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
