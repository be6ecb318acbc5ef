"""The camera loop: one bundle, N cameras (a single source is N = 1).

capture (a thread per camera: latest-frame slot for live sources, reconnect loop, stall detection,
optional frame-rate cap) → preprocess (on the capture thread or here) → one model call for the frames
that are ready across cameras, waiting at most ``batch_wait_ms`` for the others (the nvstreammux idea) →
postprocess (probabilities, top-k, the camera's smoothing and open-set decider) → one result per frame.

A camera that is dead, stalled or reconnecting contributes nothing to a batch and never blocks the
loop: frames are taken without waiting on any one camera.

The frame path exists once, here. What differs between the classic single-source run (``edgefg run
--source URI``) and named cameras is the *layout*, a small policy object: :class:`OneSource` (no
``camera`` field in results and events, stage percentiles in the summary, micro-batches from the one
buffer, no batch wait by default) and :class:`NamedCameras` (the camera's name on every result and
event, per-camera summary and snapshot, batches across cameras, 5 ms batch wait).
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgefg.errors import EdgefgError, InputPathError, SourceError, UnsupportedError
from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.capture.reader import Capture, Item, RetryPolicy
from edgefg.runtime.capture.sources import Frame, Source, open_source, redact
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.postprocess import UNKNOWN, to_probabilities, topk
from edgefg.runtime.engine.timing import percentiles
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.loop.smoothing import Decider, Decision, SmoothSpec
from edgefg.runtime.loop.stats import StageStats, recent_rate

ROI = tuple[float, float, float, float]
SourceLike = str | Path | Source | Callable[[], Source]
DEFAULT_BATCH_WAIT_MS = 5.0  # named cameras: how long a batch waits for the other cameras


@dataclass
class RunOptions:
    """Everything ``edgefg run`` can set; the defaults suit a file on a workstation."""

    max_frames: int | None = None
    output: Path | None = None  # JSON lines file; None = stdout
    topk: int = 3
    num_threads: int | None = None
    trust: tuple[str | Path, ...] | None = None  # public keys; the bundle must be signed by one (--trust)
    # source
    stall_timeout_s: float = 10.0
    max_retries: int | None = None  # None = reopen forever
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    loop: bool = False  # restart a video file / image folder at its end
    # pipeline
    batch: int = 1  # micro-batch size
    batch_wait_ms: float | None = None  # how long to wait to fill a micro-batch (None: 0 for one source, 5 ms across cameras)
    roi: str | ROI | None = None  # "x,y,w,h" in pixels (or fractions 0-1 of the frame)
    preprocess_in: str = "auto"  # auto (files with a spare core: capture thread; else main loop) | capture | main
    # postprocess
    smooth: str | SmoothSpec | None = None  # ema:A | majority:N | none
    min_confidence: float = 0.0
    min_margin: float = 0.0
    events: bool = False  # emit only when the decided label changes
    # outputs (serve)
    rotate_mb: float | None = None
    rotate_keep: int = 5
    save_video: Path | None = None
    video_fps: float | None = None
    http: str | None = None  # host:port
    http_token_file: Path | None = None  # bearer token for every path but /healthz
    http_max_connections: int = 32
    http_timeout_s: float = 10.0  # per-connection socket timeout
    mqtt: Any = None  # edgefg.runtime.outputs.mqtt.MqttOptions (paho-mqtt is imported only when set)
    stats_every_s: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # field outputs by name (edgefg.runtime.outputs.contract): {"collect": CollectOptions(...)}
    event_stream: TextIO | None = None  # structured event log; None = logging
    on_event: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)


# -- ROI --------------------------------------------------------------------------------------
def parse_roi(roi: str | ROI | None) -> ROI | None:
    if roi is None or roi == "":
        return None
    try:
        vals = tuple(float(v) for v in (roi.split(",") if isinstance(roi, str) else roi))
        if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0 or vals[0] < 0 or vals[1] < 0:
            raise ValueError
    except (ValueError, TypeError):
        raise EdgefgError(f"bad --roi '{roi}'", "use x,y,w,h in pixels (e.g. 640,360,480,480) or fractions of the frame (e.g. 0.25,0.25,0.5,0.5)") from None
    return vals  # type: ignore[return-value]


def roi_box(roi: ROI, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """ROI → integer (x, y, w, h) clipped to a frame of ``shape``; fractions if all values ≤ 1."""
    h, w = shape[:2]
    x, y, rw, rh = roi
    if max(roi) <= 1.0:
        x, y, rw, rh = x * w, y * h, rw * w, rh * h
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = min(w, int(round(x + rw))), min(h, int(round(y + rh)))
    if x0 >= w or y0 >= h or x1 - x0 < 2 or y1 - y0 < 2:
        raise EdgefgError(f"--roi {','.join(f'{v:g}' for v in roi)} lies outside the {w}x{h} frame", "give x,y,w,h inside the frame")
    return x0, y0, x1 - x0, y1 - y0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- one frame's record -------------------------------------------------------------------------
def stage_latency(it: Item, infer_ms: float, post_ms: float, now: float) -> dict[str, float]:
    """One frame's per-stage times in ms (what the JSON lines, /stats and Prometheus report).

    ``end_to_end`` is capture → result; ``queue`` the part of it the frame spent waiting in its camera's
    buffer (held back by its frame-rate cap, ``fps`` in a camera config, or behind a busy model); ``processing`` = end_to_end − queue,
    the latency the pipeline itself adds (what the page and the run summary call latency)."""
    e2e = (now - it.captured) * 1e3
    queue = max(0.0, (it.taken - it.ready) * 1e3) if it.taken and it.ready else 0.0
    return {"read": round(it.read_ms, 3), "preprocess": round(it.prepare_ms, 3), "infer": round(infer_ms, 3),
            "postprocess": round(post_ms, 3), "total": round(it.prepare_ms + infer_ms + post_ms, 3),
            "end_to_end": round(e2e, 3), "queue": round(queue, 3), "processing": round(max(0.0, e2e - queue), 3)}


def frame_result(f: Frame, probs: np.ndarray, top: Sequence[int], d: Decision, lat: dict[str, float], labels: Sequence[str], batch: int) -> dict[str, Any]:
    """One frame's result record (one JSON line): top-k, the smoothed decision, latencies."""
    result: dict[str, Any] = {
        "frame": f.index,
        "timestamp": round(f.timestamp, 6),
        "source": f.name,
        "top": [{"label": labels[i], "score": round(float(probs[i]), 6)} for i in top],
        "label": d.label,
        "score": round(d.score, 6),
        "changed": d.changed,
        "latency_ms": lat,
    }
    if batch > 1:
        result["batch"] = batch
    return result


# -- a camera ---------------------------------------------------------------------------------
class CameraEvents:
    """An EventLog view that adds ``camera=NAME`` to every event a camera emits."""

    def __init__(self, events: EventLog, camera: str) -> None:
        self._events = events
        self.camera = camera

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        return self._events.emit(event, camera=self.camera, **fields)

    @property
    def counts(self):  # noqa: ANN201
        return self._events.counts


@dataclass
class Camera:
    """One camera's state inside a :class:`CameraLoop` (read by /metrics and the web page)."""

    config: CameraConfig
    capture: Capture
    decider: Decider
    roi: ROI | None
    prepare_in_capture: bool
    events: Any = None  # EventLog, or a CameraEvents view of it
    opts: RunOptions | None = None  # the run's options with this camera's overrides (its thresholds, ROI, smoothing)
    stats: StageStats = field(default_factory=StageStats)
    frames: int = 0
    skipped: int = 0  # frames that reached the loop undecodable/malformed/unpreprocessable
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
            "unknown": self.unknown, "fps_recent": self.fps_recent(), "last_frame_time": cap.last_frame_time, "last_frame_age_s": cap.last_frame_age_s(), "latest": self.latest,
            "running": not self.done, "error": cap.error.message if cap.error is not None else None,
            "stages_recent": self.stats.summary(recent=True), "histograms": self.stats.histograms(), "smooth": str(self.decider.spec),
            "fps_cap": self.config.fps,
        }


def open_first(source: str, opts: RunOptions, events: Any, factory: Callable[[], Source] | None = None) -> tuple[Source | None, Callable[[], Source]]:
    """Open a camera's source once: ``(source, factory)``, or ``(None, factory)`` for a camera or stream
    that is not up yet (the capture thread keeps trying). A wrong path, an unsupported kind and a local
    file that is not a video are errors at once: retrying will not help."""
    factory = factory or (lambda: open_source(source))
    try:
        return factory(), factory
    except (InputPathError, UnsupportedError):
        raise
    except SourceError as exc:
        if opts.max_retries == 0 or (Path(source).is_file() and not source.startswith("/dev/")):
            raise
        events.emit("source_open_failed", source=redact(source), attempt=0, error=exc.message)
        return None, factory


# -- layouts: what differs between one unnamed source and named cameras --------------------------
class Layout:
    """How a :class:`CameraLoop` presents its cameras and sizes its batches; the frame path is the same."""

    named: bool

    def check(self, cameras: list[CameraConfig]) -> None:
        raise NotImplementedError

    def batch(self, opts: RunOptions, cameras: int) -> int:
        raise NotImplementedError

    def batch_wait_s(self, opts: RunOptions) -> float:
        raise NotImplementedError

    def capacity(self, batch: int, live: bool) -> int:
        """A camera's frame buffer: live sources keep the newest frames only, files block when it is full."""
        raise NotImplementedError

    def in_capture(self, opts: RunOptions, live: bool, model: LoadedBundle) -> bool:
        """Whether the camera's capture thread preprocesses (else the loop does)."""
        raise NotImplementedError

    def events(self, events: EventLog, camera: str) -> Any:
        raise NotImplementedError

    def result(self, cam: Camera, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def info(self, loop: CameraLoop) -> dict[str, Any]:
        raise NotImplementedError

    def camera_ended(self, loop: CameraLoop, cam: Camera) -> None:
        raise NotImplementedError

    def failure(self, loop: CameraLoop) -> EdgefgError | None:
        raise NotImplementedError

    def snapshot(self, loop: CameraLoop) -> dict[str, Any]:
        raise NotImplementedError

    def stats_fields(self, loop: CameraLoop, snap: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self, loop: CameraLoop) -> dict[str, Any]:
        raise NotImplementedError


class OneSource(Layout):
    """The classic ``edgefg run --source URI``: results and events carry no camera name (``/metrics`` and
    MQTT call it ``default``), the summary has the stage percentiles, a micro-batch (``--batch``) fills
    from the one buffer without waiting unless ``--batch-wait-ms``; the run ends when its source does."""

    named = False

    def check(self, cameras: list[CameraConfig]) -> None:
        if len(cameras) != 1:
            raise EdgefgError(f"one source expected, got {len(cameras)} cameras", "use named cameras (--source NAME=URI) for several")

    def batch(self, opts: RunOptions, cameras: int) -> int:
        return opts.batch

    def batch_wait_s(self, opts: RunOptions) -> float:
        return (opts.batch_wait_ms or 0.0) / 1e3

    def capacity(self, batch: int, live: bool) -> int:
        return batch if live else max(2, 2 * batch)

    def in_capture(self, opts: RunOptions, live: bool, model: LoadedBundle) -> bool:
        # Pipelining the preprocessing onto the capture thread only pays with a core to spare: when the
        # backend's threads take every core, a concurrent preprocess makes inference straggle (measured:
        # 2 cores, 2 OpenVINO threads → infer 5.5 ms → 10–15 ms). Live sources: main, so that frames
        # that will be dropped are never preprocessed.
        spare_core = _cores() > getattr(model.backend, "num_threads", _cores())
        return opts.preprocess_in == "capture" or (opts.preprocess_in == "auto" and not live and spare_core)

    def events(self, events: EventLog, camera: str) -> Any:
        return events

    def result(self, cam: Camera, record: dict[str, Any]) -> dict[str, Any]:
        return record

    def info(self, loop: CameraLoop) -> dict[str, Any]:
        cam = loop.only_camera
        return {"source": cam.capture.spec, "smooth": str(cam.decider.spec)}

    def camera_ended(self, loop: CameraLoop, cam: Camera) -> None:
        pass  # the run ends with its camera; outputs learn it when they are closed

    def failure(self, loop: CameraLoop) -> EdgefgError | None:
        return loop.only_camera.capture.error

    def snapshot(self, loop: CameraLoop) -> dict[str, Any]:
        cam = loop.only_camera
        cap = cam.capture
        return {
            "info": loop.info, "running": loop.running, "started": loop.started, "running_s": round(time.monotonic() - loop.started_mono, 3), "frames": cam.frames,
            "dropped": cap.dropped, "skipped": cam.skipped + cap.skipped, "reconnects": cap.reconnects, "stalls": cap.stalls,
            "label_changes": cam.label_changes, "unknown": cam.unknown, "fps_recent": cam.fps_recent(),
            "last_frame_time": cap.last_frame_time, "last_frame_age_s": cap.last_frame_age_s(), "latest": cam.latest, "stages_recent": cam.stats.summary(recent=True),
            "histograms": cam.stats.histograms(), "source": cap.spec,
        }

    def stats_fields(self, loop: CameraLoop, snap: dict[str, Any]) -> dict[str, Any]:
        return {"stages_ms": loop.only_camera.stats.summary(recent=True)}

    def summary(self, loop: CameraLoop) -> dict[str, Any]:
        cam = loop.only_camera
        seconds = loop.seconds()
        stages = cam.stats.summary()
        cap = cam.capture
        return {
            "frames": cam.frames,
            "seconds": seconds,
            "fps": cam.frames / seconds if seconds > 0 else 0.0,
            "latency_ms": percentiles(cam.stats.all["processing"].array()),
            "queue_ms": percentiles(cam.stats.all["queue"].array()),
            "stages_ms": stages,
            "skipped": cam.skipped + cap.skipped,
            "dropped": cap.dropped,
            "frames_read": cap.frames_read,
            "reconnects": cap.reconnects,
            "stalls": cap.stalls,
            "label_changes": cam.label_changes,
            "unknown": cam.unknown,
            "preprocess_in": "capture" if cam.prepare_in_capture else "main",
            "batch": loop.batch,
            "smooth": str(cam.decider.spec),
            "events": dict(loop.events.counts),
        }


class NamedCameras(Layout):
    """Named cameras (``--source NAME=URI`` or ``--config``; one or more): every result and event carries
    ``camera``, the summary and snapshot are per camera, a batch (default: one frame per camera) takes
    what is ready across cameras and waits ``--batch-wait-ms`` (5 ms) for the others; a camera that ends
    is announced (``camera_ended``) and the others go on."""

    named = True

    def check(self, cameras: list[CameraConfig]) -> None:
        if not cameras:
            raise EdgefgError("no cameras given", "pass --source NAME=URI (repeatable) or --config cameras.toml")

    def batch(self, opts: RunOptions, cameras: int) -> int:
        return max(opts.batch, cameras) if opts.batch == 1 else opts.batch

    def batch_wait_s(self, opts: RunOptions) -> float:
        return (DEFAULT_BATCH_WAIT_MS if opts.batch_wait_ms is None else opts.batch_wait_ms) / 1e3

    def capacity(self, batch: int, live: bool) -> int:
        return 1 if live else 2

    def in_capture(self, opts: RunOptions, live: bool, model: LoadedBundle) -> bool:
        # auto: files preprocess on their capture threads (in parallel across cameras, overlapping inference:
        # measured 4 cameras on 2 cores, 49 vs 30 FPS); live cameras on the main loop, so that frames the
        # latest-frame slot drops are never preprocessed.
        return opts.preprocess_in == "capture" or (opts.preprocess_in == "auto" and not live)

    def events(self, events: EventLog, camera: str) -> Any:
        return CameraEvents(events, camera)

    def result(self, cam: Camera, record: dict[str, Any]) -> dict[str, Any]:
        return {"camera": cam.name, **record}

    def info(self, loop: CameraLoop) -> dict[str, Any]:
        return {}

    def camera_ended(self, loop: CameraLoop, cam: Camera) -> None:
        err = cam.capture.error
        cam.events.emit("camera_ended", frames=cam.frames, **({"error": err.message} if err is not None else {}))
        if loop.on_camera_done is not None:
            loop.on_camera_done(cam.name)

    def failure(self, loop: CameraLoop) -> EdgefgError | None:
        errs = loop.errors()
        if not errs:
            return None
        return SourceError("; ".join(f"camera '{n}': {m}" for n, m in errs.items()), "check those cameras; the others ran to their end")

    def snapshot(self, loop: CameraLoop) -> dict[str, Any]:
        cams = {name: c.snapshot() for name, c in loop.cameras.items()}
        newest = max((c for c in loop.cameras.values() if c.done_times), key=lambda c: c.done_times[-1], default=None)
        latest = newest.latest if newest is not None else None
        last_times = [c["last_frame_time"] for c in cams.values() if c["last_frame_time"]]
        snap: dict[str, Any] = {"info": loop.info, "running": loop.running, "started": loop.started, "running_s": round(time.monotonic() - loop.started_mono, 3), "cameras": cams, "latest": latest,
                                "last_frame_time": min(last_times) if len(last_times) == len(cams) else None}
        for key in ("frames", "dropped", "skipped", "reconnects", "stalls", "label_changes", "unknown", "fps_recent"):
            snap[key] = sum(c[key] for c in cams.values())
        snap["batches"] = loop.batches
        snap["mean_batch"] = loop.batched_frames / loop.batches if loop.batches else 0.0
        return snap

    def stats_fields(self, loop: CameraLoop, snap: dict[str, Any]) -> dict[str, Any]:
        return {"cameras": {n: {k: c[k] for k in ("frames", "dropped", "skipped", "reconnects", "stalls")} | {"fps": round(c["fps_recent"], 2)}
                            for n, c in snap["cameras"].items()}}

    def summary(self, loop: CameraLoop) -> dict[str, Any]:
        seconds = loop.seconds()
        per_cam: dict[str, Any] = {}
        totals, queues = [], []
        for name, c in loop.cameras.items():
            t = c.stats.all["processing"].array()
            q = c.stats.all["queue"].array()
            e2e = c.stats.all["end_to_end"].array()
            totals.append(t)
            queues.append(q)
            cap = c.capture
            per_cam[name] = {"frames": c.frames, "fps": c.frames / seconds if seconds > 0 else 0.0, "latency_ms": percentiles(t),
                             "queue_ms": percentiles(q), "end_to_end_ms": percentiles(e2e), "skipped": c.skipped + cap.skipped, "dropped": cap.dropped,
                             "frames_read": cap.frames_read, "reconnects": cap.reconnects, "stalls": cap.stalls,
                             "label_changes": c.label_changes, "unknown": c.unknown,
                             **({"error": cap.error.message} if cap.error is not None else {})}
        allt = np.concatenate(totals) if totals else np.empty(0)
        allq = np.concatenate(queues) if queues else np.empty(0)
        frames = loop.frames
        return {
            "frames": frames, "seconds": seconds, "fps": frames / seconds if seconds > 0 else 0.0, "latency_ms": percentiles(allt),
            "queue_ms": percentiles(allq),
            "stages_ms": {}, "cameras": per_cam, "batches": loop.batches,
            "mean_batch": round(loop.batched_frames / loop.batches, 3) if loop.batches else 0.0,
            **{k: sum(v[k] for v in per_cam.values()) for k in ("skipped", "dropped", "frames_read", "reconnects", "stalls", "label_changes", "unknown")},
            "events": dict(loop.events.counts),
        }


# -- the loop ---------------------------------------------------------------------------------
class CameraLoop:
    """One bundle, N cameras. Iterate :meth:`run` for ``(camera, result, frame)``; read :meth:`summary`
    and :meth:`snapshot` (safe from another thread); :meth:`stop` from a signal handler or another thread.

    ``sources``: a ready :class:`Source` or a factory per camera name (the Python API and tests); else
    each camera's ``source`` is opened. ``layout``: :class:`NamedCameras` (default) or :class:`OneSource`.
    """

    def __init__(self, bundle: str | Path | LoadedBundle, cameras: list[CameraConfig], opts: RunOptions | None = None,
                 events: EventLog | None = None, sources: dict[str, Source | Callable[[], Source]] | None = None,
                 layout: Layout | None = None) -> None:
        self.opts = opts = opts or RunOptions()
        self.layout = layout = layout or NamedCameras()
        layout.check(cameras)
        if opts.batch < 1:
            raise EdgefgError(f"--batch must be ≥ 1, got {opts.batch}")
        if opts.preprocess_in not in ("auto", "capture", "main"):
            raise EdgefgError(f"bad preprocess_in '{opts.preprocess_in}'", "use auto, capture or main")
        # settings that can be wrong: checked before the model loads
        per_camera = {c.name: c.options(opts) for c in cameras}  # the run's options with each camera's overrides
        rois = {n: parse_roi(o.roi) for n, o in per_camera.items()}
        specs = {n: _smooth_spec(o.smooth) for n, o in per_camera.items()}
        self.events = events or EventLog(opts.event_stream, opts.on_event)
        self.batch = layout.batch(opts, len(cameras))
        self.batch_wait_s = layout.batch_wait_s(opts)
        self._own_model = not isinstance(bundle, LoadedBundle)
        self.model = bundle if isinstance(bundle, LoadedBundle) else LoadedBundle(bundle, num_threads=opts.num_threads, trust=opts.trust or None)
        self._wake = threading.Condition()
        self._dirty = False
        self.cameras: dict[str, Camera] = {}
        try:
            for cfg in cameras:
                self.cameras[cfg.name] = self._camera(cfg, per_camera[cfg.name], (sources or {}).get(cfg.name), rois[cfg.name], specs[cfg.name])
        except BaseException:
            self.close()
            raise
        self.stop_event = threading.Event()
        self.running = False
        self.started = time.time()
        self.started_mono = time.monotonic()
        self._t0 = time.perf_counter()
        self._t_end: float | None = None
        self._activation = self.model.manifest.output_activation
        self.batches = 0
        self.batched_frames = 0
        self.on_camera_done: Callable[[str], None] | None = None  # called with the camera name when a camera's capture ends
        m = self.model.manifest
        self.info = {"bundle": str(self.model.directory), "name": m.name, "backend": m.backend, "precision": m.precision, **layout.info(self)}

    def _camera(self, cfg: CameraConfig, opts: RunOptions, given: Source | Callable[[], Source] | None, roi: ROI | None, spec: SmoothSpec) -> Camera:
        events = self.layout.events(self.events, cfg.name)
        first: Source | None
        if isinstance(given, Source):
            first, factory = given, given.reopen
        else:
            first, factory = open_first(cfg.source, opts, events, given)
        live = first.live if first is not None else True
        in_capture = self.layout.in_capture(opts, live, self.model)
        decider = Decider(self.model.labels, spec, opts.min_confidence, opts.min_margin)
        policy = RetryPolicy(opts.stall_timeout_s, opts.max_retries, opts.backoff_initial_s, opts.backoff_max_s)
        prepare = (lambda image, _roi=roi: self.prepare(image, _roi)) if in_capture else None
        cap = Capture(first, factory, policy, events, capacity=self.layout.capacity(self.batch, live), loop=opts.loop, prepare=prepare)
        cap.spec = first.name if first is not None else redact(cfg.source)
        cap.initial_failures = 0 if first is not None else 1
        cap.buffer.on_put = self._notify
        return Camera(cfg, cap, decider, roi, in_capture, events, opts)

    # -- stages -----------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, roi: ROI | None = None) -> np.ndarray:
        """ROI crop + the bundle's preprocessing (one sample)."""
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
                        self.layout.camera_ended(self, cam)
                    continue
                items[0].taken = time.perf_counter()
                ready.append((cam, items[0]))
                progress = True
                if cam.config.fps:
                    cam.next_due = max(cam.next_due + 1.0 / cam.config.fps, now) if cam.next_due else now + 1.0 / cam.config.fps
        return ready, next_due

    def run(self) -> Iterator[tuple[Camera, dict[str, Any], Frame]]:
        """Yield ``(camera, result, frame)`` for every classified frame until every camera has ended,
        ``max_frames`` (all cameras together) or :meth:`stop`; then :meth:`failure` tells what failed."""
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
                if not ready and all(c.done for c in self.cameras.values()):
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
        arrays: list[np.ndarray] = []  # good[i]'s preprocessed frame
        for cam, it in ready:
            if it.error is None and it.prepared is None:
                t0 = time.perf_counter()
                try:
                    it.prepared = self.prepare(it.frame.image, cam.roi)  # type: ignore[arg-type]
                except EdgefgError:
                    raise
                except Exception as exc:
                    it.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
                it.prepare_ms = (time.perf_counter() - t0) * 1e3
            if it.error is None and it.prepared is not None:
                good.append((cam, it))
                arrays.append(it.prepared)
            else:
                self._corrupt(cam, it)
        if not good:
            return
        t1 = time.perf_counter()
        x = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
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
            result = self.layout.result(cam, frame_result(f, p, tops[row], d, lat, labels, len(good)))
            cam.frames += 1
            cam.label_changes += d.changed
            cam.unknown += d.label == UNKNOWN
            cam.latest = result
            cam.done_times.append(now)
            yield cam, result, f

    def _corrupt(self, cam: Camera, it: Item) -> None:
        cam.skipped += 1
        now = time.monotonic()
        if now - cam.last_corrupt_event >= 1.0:  # at most one event per second
            cam.last_corrupt_event = now
            cam.events.emit("corrupt_frame", source=cam.capture.spec, frame=it.frame.index, error=it.error,
                            skipped_total=cam.skipped + cam.capture.skipped)

    def stop(self) -> None:
        """Ask the loop to finish the current frame and end (thread- and signal-safe)."""
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

    @property
    def only_camera(self) -> Camera:
        """The camera of a one-camera loop."""
        return next(iter(self.cameras.values()))

    def seconds(self) -> float:
        return (self._t_end or time.perf_counter()) - self._t0

    def errors(self) -> dict[str, str]:
        return {c.name: c.capture.error.message for c in self.cameras.values() if c.capture.error is not None}

    def failure(self) -> EdgefgError | None:
        """What made the run fail once :meth:`run` has ended (retries exhausted, a camera lost for good);
        None when it was stopped or ran to its end."""
        return None if self.stop_event.is_set() else self.layout.failure(self)

    def rois(self) -> dict[str, Callable[[tuple[int, ...]], tuple[int, int, int, int]] | None]:
        """Each camera's ROI as a function of the frame shape (None: the whole frame)."""
        return {n: (functools.partial(roi_box, c.roi) if c.roi is not None else None) for n, c in self.cameras.items()}

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``/healthz``, ``/metrics`` and the live page (safe to call from another thread)."""
        return self.layout.snapshot(self)

    def stats_fields(self, snap: dict[str, Any]) -> dict[str, Any]:
        """What the periodic ``stats`` event adds to the totals: stage percentiles (one source) or per-camera counts."""
        return self.layout.stats_fields(self, snap)

    def summary(self) -> dict[str, Any]:
        return self.layout.summary(self)


def _smooth_spec(smooth: str | SmoothSpec | None) -> SmoothSpec:
    return smooth if isinstance(smooth, SmoothSpec) else SmoothSpec.parse(smooth)
