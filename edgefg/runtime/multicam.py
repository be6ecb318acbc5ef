"""Many cameras, one model: every camera has its own capture thread (latest-frame slot, reconnect loop,
stall detection), decider (smoothing, open-set thresholds), frame-rate cap and statistics; one
:class:`MultiPipeline` loop takes whatever frames are ready from all cameras, waits at most
``batch_wait_ms`` for more (the nvstreammux idea), and runs them through the model as one batch.

A camera that is dead, stalled or reconnecting contributes nothing to a batch and never blocks the
loop: frames are taken without waiting on any one camera. Every result carries ``camera``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgefg.errors import EdgefgError, InputPathError, SourceError, UnsupportedError
from edgefg.runtime.cameras import CameraConfig
from edgefg.runtime.capture import Capture, Item, RetryPolicy
from edgefg.runtime.events import EventLog
from edgefg.runtime.model import LoadedBundle
from edgefg.runtime.pipeline import RunOptions, frame_result, parse_roi, roi_box, stage_latency
from edgefg.runtime.postprocess import UNKNOWN, to_probabilities, topk
from edgefg.runtime.smoothing import Decider, SmoothSpec
from edgefg.runtime.sources import Frame, Source, open_source, redact
from edgefg.runtime.stats import StageStats, recent_rate
from edgefg.runtime.timing import percentiles

DEFAULT_BATCH_WAIT_MS = 5.0  # multi-camera default: how long a batch waits for the other cameras


@dataclass
class Camera:
    """One camera's state inside a :class:`MultiPipeline` (read by /metrics and the web page)."""

    config: CameraConfig
    capture: Capture
    decider: Decider
    roi: tuple[float, float, float, float] | None
    prepare_in_capture: bool
    stats: StageStats = field(default_factory=StageStats)
    frames: int = 0
    skipped: int = 0
    label_changes: int = 0
    unknown: int = 0
    latest: dict[str, Any] | None = None
    done: bool = False
    next_due: float = 0.0  # monotonic time before which the fps cap holds frames back
    done_times: deque = field(default_factory=lambda: deque(maxlen=256))
    last_corrupt_event: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def fps_recent(self) -> float:
        return recent_rate(self.done_times)

    def snapshot(self) -> dict[str, Any]:
        cap = self.capture
        return {
            "source": cap.spec, "frames": self.frames, "dropped": cap.dropped, "skipped": self.skipped + cap.skipped,
            "frames_read": cap.frames_read, "reconnects": cap.reconnects, "stalls": cap.stalls, "label_changes": self.label_changes,
            "unknown": self.unknown, "fps_recent": self.fps_recent(), "last_frame_time": cap.last_frame_time, "latest": self.latest,
            "running": not self.done, "error": cap.error.message if cap.error is not None else None,
            "stages_recent": self.stats.summary(recent=True), "histograms": self.stats.histograms(), "smooth": str(self.decider.spec),
            "fps_cap": self.config.fps,
        }


def _open_first(source: str, opts: RunOptions, events: EventLog, camera: str, factory: Callable[[], Source] | None = None) -> tuple[Source | None, Any]:
    factory = factory or (lambda: open_source(source))
    try:
        return factory(), factory
    except (InputPathError, UnsupportedError):
        raise
    except SourceError as exc:
        if opts.max_retries == 0 or (Path(source).is_file() and not source.startswith("/dev/")):
            raise
        events.emit("source_open_failed", camera=camera, source=redact(source), attempt=0, error=exc.message)
        return None, factory


class MultiPipeline:
    """One bundle, several cameras. Iterate :meth:`results` for ``(camera, result, frame)``."""

    def __init__(self, bundle: str | Path | LoadedBundle, cameras: list[CameraConfig], opts: RunOptions | None = None,
                 events: EventLog | None = None, sources: dict[str, Source | Callable[[], Source]] | None = None) -> None:
        self.opts = opts = opts or RunOptions()
        if not cameras:
            raise EdgefgError("no cameras given", "pass --source NAME=URI (repeatable) or --config cameras.toml")
        self.events = events or EventLog(opts.event_stream, opts.on_event)
        self.batch = max(opts.batch, len(cameras)) if opts.batch == 1 else opts.batch
        if self.batch < 1:
            raise EdgefgError(f"--batch must be ≥ 1, got {opts.batch}")
        self.batch_wait_s = (DEFAULT_BATCH_WAIT_MS if opts.batch_wait_ms is None else opts.batch_wait_ms) / 1e3
        self._own_model = not isinstance(bundle, LoadedBundle)
        self.model = bundle if isinstance(bundle, LoadedBundle) else LoadedBundle(bundle, num_threads=opts.num_threads, trust=opts.trust or None)
        self._wake = threading.Condition()
        self._dirty = False
        self.cameras: dict[str, Camera] = {}
        try:
            for cfg in cameras:
                self.cameras[cfg.name] = self._camera(cfg, (sources or {}).get(cfg.name))
        except BaseException:
            self.close()
            raise
        self.stop_event = threading.Event()
        self.running = False
        self.started = time.time()
        self._t0 = time.perf_counter()
        self._t_end: float | None = None
        self._activation = self.model.manifest.output_activation
        self.batches = 0
        self.batched_frames = 0
        self.on_camera_done: Any = None  # called with the camera name when a camera's capture ends
        m = self.model.manifest
        self.info = {"bundle": str(self.model.directory), "name": m.name, "backend": m.backend, "precision": m.precision}

    def _camera(self, cfg: CameraConfig, given: Source | Callable[[], Source] | None) -> Camera:
        """``given``: a ready source or a factory (the Python API and tests); else ``cfg.source`` is opened."""
        opts = self.opts
        if isinstance(given, Source):
            first, factory = given, given.reopen
        else:
            first, factory = _open_first(cfg.source, opts, self.events, cfg.name, given)
        live = first.live if first is not None else True
        # auto: files preprocess on their capture threads (in parallel across cameras, overlapping inference:
        # measured 4 cameras on 2 cores, 49 vs 30 FPS); live cameras on the main loop, so that frames the
        # latest-frame slot drops are never preprocessed.
        in_capture = opts.preprocess_in == "capture" or (opts.preprocess_in == "auto" and not live)
        roi = parse_roi(cfg.roi if cfg.roi is not None else opts.roi)
        smooth = cfg.smooth if cfg.smooth is not None else opts.smooth
        spec = smooth if isinstance(smooth, SmoothSpec) else SmoothSpec.parse(smooth)
        decider = Decider(self.model.labels, spec, opts.min_confidence if cfg.min_confidence is None else cfg.min_confidence,
                          opts.min_margin if cfg.min_margin is None else cfg.min_margin)
        stall = cfg.stall_timeout if cfg.stall_timeout is not None else opts.stall_timeout_s
        policy = RetryPolicy(stall, opts.max_retries, opts.backoff_initial_s, opts.backoff_max_s)
        loop = opts.loop if cfg.loop is None else cfg.loop
        cam_events = _CameraEvents(self.events, cfg.name)
        prepare = (lambda image, _roi=roi: self._prepare(image, _roi)) if in_capture else None
        cap = Capture(first, factory, policy, cam_events, capacity=1 if live else 2, loop=loop, prepare=prepare)  # type: ignore[arg-type]
        cap.spec = first.name if first is not None else redact(cfg.source)
        cap.initial_failures = 0 if first is not None else 1
        cap.buffer.on_put = self._notify
        return Camera(cfg, cap, decider, roi, in_capture)

    # -- stages -----------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray, roi: tuple[float, float, float, float] | None) -> np.ndarray:
        if roi is not None:
            x, y, w, h = roi_box(roi, image.shape)
            image = image[y : y + h, x : x + w]
        return self.model.prepare(image)

    def _notify(self) -> None:
        with self._wake:
            self._dirty = True
            self._wake.notify_all()

    def _wait(self, timeout: float) -> None:
        with self._wake:
            if not self._dirty and timeout > 0:
                self._wake.wait(timeout)
            self._dirty = False

    def _gather(self, want: int) -> tuple[list[tuple[Camera, Item]], float]:
        """Take ready frames round-robin (never waiting on a camera); also return how long until the
        next fps-capped camera is due (inf if none)."""
        ready: list[tuple[Camera, Item]] = []
        cams = list(self.cameras.values())
        start = self.batches % len(cams)  # rotate who goes first: fair when the batch is smaller than the cameras
        order = cams[start:] + cams[:start]
        next_due = float("inf")
        progress = True
        while len(ready) < want and progress:
            progress = False
            for cam in order:
                if len(ready) >= want:
                    break
                if cam.done:
                    continue
                now = time.monotonic()
                if cam.next_due > now:
                    next_due = min(next_due, cam.next_due - now)
                    continue
                items = cam.capture.buffer.get_batch(1, timeout=0)
                if not items:
                    if cam.capture.buffer.closed and len(cam.capture.buffer) == 0:
                        cam.done = True
                        self._camera_done(cam)
                    continue
                ready.append((cam, items[0]))
                progress = True
                if cam.config.fps:
                    cam.next_due = max(cam.next_due + 1.0 / cam.config.fps, now) if cam.next_due else now + 1.0 / cam.config.fps
        return ready, next_due

    def _camera_done(self, cam: Camera) -> None:
        err = cam.capture.error
        self.events.emit("camera_ended", camera=cam.name, frames=cam.frames, **({"error": err.message} if err is not None else {}))
        if self.on_camera_done is not None:
            self.on_camera_done(cam.name)

    def results(self) -> Iterator[tuple[Camera, dict[str, Any], Frame]]:
        opts = self.opts
        self._t0 = time.perf_counter()
        self.running = True
        for cam in self.cameras.values():
            cam.capture.start()
        try:
            while not self.stop_event.is_set():
                total = self.frames
                if opts.max_frames is not None and total >= opts.max_frames:
                    break
                want = self.batch if opts.max_frames is None else max(1, min(self.batch, opts.max_frames - total))
                ready, next_due = self._gather(want)
                if all(c.done for c in self.cameras.values()):
                    if not ready:
                        break
                if not ready:
                    self._wait(min(0.1, next_due))
                    continue
                if len(ready) < want and self.batch_wait_s > 0:
                    deadline = time.monotonic() + self.batch_wait_s
                    while len(ready) < want and not self.stop_event.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._wait(min(left, next_due))
                        more, next_due = self._gather(want - len(ready))
                        ready += more
                        if all(c.done for c in self.cameras.values()):
                            break
                yield from self._process(ready)
        finally:
            self._t_end = time.perf_counter()
            self.running = False
            for cam in self.cameras.values():
                cam.capture.stop()

    def _process(self, ready: list[tuple[Camera, Item]]) -> Iterator[tuple[Camera, dict[str, Any], Frame]]:
        good: list[tuple[Camera, Item]] = []
        for cam, it in ready:
            if it.error is None and it.prepared is None:
                t0 = time.perf_counter()
                try:
                    it.prepared = self._prepare(it.frame.image, cam.roi)  # type: ignore[arg-type]
                except EdgefgError:
                    raise
                except Exception as exc:
                    it.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
                it.prepare_ms = (time.perf_counter() - t0) * 1e3
            if it.error is None:
                good.append((cam, it))
            else:
                self._corrupt(cam, it)
        if not good:
            return
        t1 = time.perf_counter()
        x = good[0][1].prepared[None] if len(good) == 1 else np.stack([it.prepared for _, it in good])
        scores = self.model.scores(x)
        t2 = time.perf_counter()
        infer_ms = (t2 - t1) * 1e3
        self.batches += 1
        self.batched_frames += len(good)
        probs = to_probabilities(scores, self._activation)
        tops = topk(probs, self.opts.topk)
        labels = self.model.labels
        for row, (cam, it) in enumerate(good):
            t3 = time.perf_counter()
            p = probs[row]
            d = cam.decider.update(p)
            post_ms = (time.perf_counter() - t3) * 1e3 + ((t3 - t2) * 1e3 if row == 0 else 0.0)
            now = time.perf_counter()
            lat = stage_latency(it, infer_ms, post_ms, now)
            for stage, ms in lat.items():
                cam.stats.add(stage, ms)
            f = it.frame
            f.probabilities = p
            result: dict[str, Any] = {"camera": cam.name, **frame_result(f, p, tops[row], d, lat, labels, len(good))}
            cam.frames += 1
            cam.label_changes += d.changed
            cam.unknown += d.label == UNKNOWN
            cam.latest = result
            cam.done_times.append(now)
            yield cam, result, f

    def _corrupt(self, cam: Camera, it: Item) -> None:
        cam.skipped += 1
        now = time.monotonic()
        if now - cam.last_corrupt_event >= 1.0:
            cam.last_corrupt_event = now
            self.events.emit("corrupt_frame", camera=cam.name, source=cam.capture.spec, frame=it.frame.index, error=it.error,
                             skipped_total=cam.skipped + cam.capture.skipped)

    def stop(self) -> None:
        self.stop_event.set()
        self._notify()

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.capture.stop()
        if self._own_model:
            self.model.close()

    # -- reporting --------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.cameras.values())

    def errors(self) -> dict[str, str]:
        return {c.name: c.capture.error.message for c in self.cameras.values() if c.capture.error is not None}

    def snapshot(self) -> dict[str, Any]:
        cams = {name: c.snapshot() for name, c in self.cameras.items()}
        newest = max((c for c in self.cameras.values() if c.done_times), key=lambda c: c.done_times[-1], default=None)
        latest = newest.latest if newest is not None else None
        last_times = [c["last_frame_time"] for c in cams.values() if c["last_frame_time"]]
        snap: dict[str, Any] = {"info": self.info, "running": self.running, "started": self.started, "cameras": cams, "latest": latest,
                                "last_frame_time": min(last_times) if len(last_times) == len(cams) else None}
        for key in ("frames", "dropped", "skipped", "reconnects", "stalls", "label_changes", "unknown", "fps_recent"):
            snap[key] = sum(c[key] for c in cams.values())
        snap["batches"] = self.batches
        snap["mean_batch"] = self.batched_frames / self.batches if self.batches else 0.0
        return snap

    def summary(self) -> dict[str, Any]:
        seconds = (self._t_end or time.perf_counter()) - self._t0
        per_cam: dict[str, Any] = {}
        totals = []
        for name, c in self.cameras.items():
            t = c.stats.all["total"].array()
            e2e = c.stats.all["end_to_end"].array()
            totals.append(t)
            cap = c.capture
            per_cam[name] = {"frames": c.frames, "fps": c.frames / seconds if seconds > 0 else 0.0, "latency_ms": percentiles(t),
                             "end_to_end_ms": percentiles(e2e), "skipped": c.skipped + cap.skipped, "dropped": cap.dropped,
                             "frames_read": cap.frames_read, "reconnects": cap.reconnects, "stalls": cap.stalls,
                             "label_changes": c.label_changes, "unknown": c.unknown,
                             **({"error": cap.error.message} if cap.error is not None else {})}
        allt = np.concatenate(totals) if totals else np.empty(0)
        frames = self.frames
        return {
            "frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else 0.0, "latency_ms": percentiles(allt),
            "stages_ms": {}, "cameras": per_cam, "batches": self.batches,
            "mean_batch": round(self.batched_frames / self.batches, 3) if self.batches else 0.0,
            **{k: sum(v[k] for v in per_cam.values()) for k in ("skipped", "dropped", "frames_read", "reconnects", "stalls", "label_changes", "unknown")},
            "events": dict(self.events.counts),
        }


class _CameraEvents:
    """An EventLog view that adds ``camera=NAME`` to every event a camera's capture emits."""

    def __init__(self, events: EventLog, camera: str) -> None:
        self._events = events
        self.camera = camera

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        return self._events.emit(event, camera=self.camera, **fields)

    @property
    def counts(self):  # noqa: ANN201
        return self._events.counts



def stream_cameras(bundle: str | Path | LoadedBundle, cameras: list[CameraConfig], opts: RunOptions | None = None,
                   sources: dict[str, Source | Callable[[], Source]] | None = None) -> Iterator[dict[str, Any]]:
    """``for result in stream_cameras(bundle, [CameraConfig("feeder", "rtsp://…"), …]): result["camera"] …``
    (only label changes with ``opts.events``). Breaking out of the loop stops every capture."""
    pipe = MultiPipeline(bundle, cameras, opts, sources=sources)
    try:
        for _, result, _ in pipe.results():
            if pipe.opts.events and not result["changed"]:
                continue
            yield result
    finally:
        pipe.close()
