"""The on-device loop: capture (own thread) → preprocess → infer (optionally micro-batched) →
postprocess (softmax, top-k, smoothing, open-set rejection) → sinks (JSON lines, video, HTTP).

Python API::

    for result in edgefg.runtime.stream("bundle/", "rtsp://cam/stream", RunOptions(smooth="ema:0.6")):
        print(result["label"], result["score"])

``run_pipeline`` is what ``edgefg run`` calls: it adds the sinks, SIGTERM/SIGINT handling (finish the
current frame, flush, summarize) and returns the summary. numpy + OpenCV + one backend; never torch.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np

from edgefg.errors import EdgefgError, InputPathError, SourceError, UnsupportedError
from edgefg.runtime.capture import Capture, Item, RetryPolicy
from edgefg.runtime.events import EventLog
from edgefg.runtime.model import LoadedBundle
from edgefg.runtime.postprocess import UNKNOWN, to_probabilities, topk
from edgefg.runtime.smoothing import Decider, Decision, SmoothSpec
from edgefg.runtime.sources import Frame, Source, open_source, redact
from edgefg.runtime.stats import StageStats, recent_rate
from edgefg.runtime.timing import percentiles

ROI = tuple[float, float, float, float]


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
    # sinks (run_pipeline)
    rotate_mb: float | None = None
    rotate_keep: int = 5
    save_video: Path | None = None
    video_fps: float | None = None
    http: str | None = None  # host:port
    http_token_file: Path | None = None  # bearer token for every path but /healthz
    http_max_connections: int = 32
    http_timeout_s: float = 10.0  # per-connection socket timeout
    mqtt: Any = None  # edgefg.runtime.mqtt.MqttOptions (paho-mqtt is imported only when set)
    stats_every_s: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # field outputs by name (edgefg.runtime.output): {"collect": CollectOptions(...)}
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


# -- the pipeline -----------------------------------------------------------------------------
SourceLike = str | Path | Source | Callable[[], Source]


def stage_latency(it: Item, infer_ms: float, post_ms: float, now: float) -> dict[str, float]:
    """One frame's per-stage times in ms (what the JSON lines, /stats and Prometheus report)."""
    return {"read": round(it.read_ms, 3), "preprocess": round(it.prepare_ms, 3), "infer": round(infer_ms, 3),
            "postprocess": round(post_ms, 3), "total": round(it.prepare_ms + infer_ms + post_ms, 3),
            "end_to_end": round((now - it.captured) * 1e3, 3)}


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


class Pipeline:
    """One bundle on one source. Iterate :meth:`results`; read :meth:`summary` / :meth:`snapshot`."""

    def __init__(self, bundle: str | Path | LoadedBundle, source: SourceLike, opts: RunOptions | None = None, events: EventLog | None = None):
        self.opts = opts = opts or RunOptions()
        if opts.batch < 1:
            raise EdgefgError(f"--batch must be ≥ 1, got {opts.batch}")
        if opts.preprocess_in not in ("auto", "capture", "main"):
            raise EdgefgError(f"bad preprocess_in '{opts.preprocess_in}'", "use auto, capture or main")
        self.events = events or EventLog(opts.event_stream, opts.on_event)
        self.roi = parse_roi(opts.roi)
        self.decider_spec = SmoothSpec.parse(opts.smooth) if not isinstance(opts.smooth, SmoothSpec) else opts.smooth
        self._own_model = not isinstance(bundle, LoadedBundle)
        self.model = bundle if isinstance(bundle, LoadedBundle) else LoadedBundle(bundle, num_threads=opts.num_threads, trust=opts.trust or None)
        try:
            first, factory = self._source(source)
        except BaseException:
            if self._own_model:
                self.model.close()
            raise
        live = first.live if first is not None else True
        # Pipelining the preprocessing onto the capture thread only pays with a core to spare: when the
        # backend's threads take every core, a concurrent preprocess makes inference straggle (measured:
        # 2 cores, 2 OpenVINO threads → infer 5.5 ms → 10–15 ms). Live sources: main, so that frames
        # that will be dropped are never preprocessed.
        spare_core = _cores() > getattr(self.model.backend, "num_threads", _cores())
        in_capture = opts.preprocess_in == "capture" or (opts.preprocess_in == "auto" and not live and spare_core)
        policy = RetryPolicy(opts.stall_timeout_s, opts.max_retries, opts.backoff_initial_s, opts.backoff_max_s)
        capacity = opts.batch if live else max(2, 2 * opts.batch)
        self.capture = Capture(first, factory, policy, self.events, capacity=capacity, loop=opts.loop, prepare=self.prepare if in_capture else None)
        self.capture.spec = first.name if first is not None else redact(str(source))
        self.capture.initial_failures = 0 if first is not None else 1
        self.preprocess_in = "capture" if in_capture else "main"
        self.decider = Decider(self.model.labels, self.decider_spec, opts.min_confidence, opts.min_margin)
        self.stats = StageStats()
        self.stop_event = threading.Event()
        self.frames = 0
        self.skipped = 0  # frames that reached the loop undecodable/malformed/unpreprocessable
        self.label_changes = 0
        self.unknown = 0
        self.latest: dict[str, Any] | None = None
        self.started = time.time()
        self.running = False
        self._t0 = time.perf_counter()
        self._t_end: float | None = None
        self._done_times: deque[float] = deque(maxlen=256)
        self._last_corrupt_event = 0.0
        self._activation = self.model.manifest.output_activation
        m = self.model.manifest
        self.info = {"bundle": str(self.model.directory), "name": m.name, "backend": m.backend, "precision": m.precision,
                     "source": self.capture.spec, "smooth": str(self.decider_spec)}

    def _source(self, source: SourceLike) -> tuple[Source | None, Callable[[], Source]]:
        if isinstance(source, Source):
            return source, source.reopen
        if callable(source):
            factory = source
        else:
            spec = str(source)
            factory = lambda: open_source(spec)  # noqa: E731
        try:
            return factory(), factory
        except (InputPathError, UnsupportedError):
            raise  # a wrong path or an unsupported kind: retrying will not help
        except SourceError as exc:
            local_file = not isinstance(source, Source) and not callable(source) and Path(str(source)).is_file() and not str(source).startswith("/dev/")
            if self.opts.max_retries == 0 or local_file:  # a file that is not a video will not become one
                raise
            self.events.emit("source_open_failed", source=redact(str(source)), attempt=0, error=exc.message)
            return None, factory  # a camera/stream that is not up yet: the capture thread keeps trying

    # -- stages ---------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """ROI crop + the bundle's preprocessing (one sample)."""
        if self.roi is not None:
            x, y, w, h = roi_box(self.roi, image.shape)
            image = image[y : y + h, x : x + w]
        return self.model.prepare(image)

    def results(self) -> Iterator[tuple[dict[str, Any], Frame]]:
        """Yield ``(result, frame)`` for every classified frame until the source ends, ``max_frames``
        or :meth:`stop`. Raises the capture's fatal error (e.g. retries exhausted) at the end."""
        opts = self.opts
        cap = self.capture
        self._t0 = time.perf_counter()
        self.running = True
        cap.start()
        fill_wait = (opts.batch_wait_ms or 0.0) / 1e3
        try:
            while not self.stop_event.is_set():
                if opts.max_frames is not None and self.frames >= opts.max_frames:
                    break
                want = opts.batch if opts.max_frames is None else max(1, min(opts.batch, opts.max_frames - self.frames))
                items = cap.buffer.get_batch(want, timeout=0.1, fill_wait=fill_wait)
                if not items:
                    if cap.buffer.closed and len(cap.buffer) == 0:
                        break
                    continue
                good: list[Item] = []
                for it in items:
                    if it.error is None and it.prepared is None:
                        t0 = time.perf_counter()
                        try:
                            it.prepared = self.prepare(it.frame.image)
                        except EdgefgError:
                            raise
                        except Exception as exc:
                            it.error = f"preprocessing failed: {type(exc).__name__}: {exc}"
                        it.prepare_ms = (time.perf_counter() - t0) * 1e3
                    if it.error is None:
                        good.append(it)
                    else:
                        self._corrupt(it)
                if good:
                    yield from self._classify(good)
        finally:
            self._t_end = time.perf_counter()
            self.running = False
            cap.stop()
        if cap.error is not None and not self.stop_event.is_set():
            raise cap.error

    def _classify(self, items: list[Item]) -> Iterator[tuple[dict[str, Any], Frame]]:
        t1 = time.perf_counter()
        x = items[0].prepared[None] if len(items) == 1 else np.stack([it.prepared for it in items])
        scores = self.model.scores(x)
        t2 = time.perf_counter()
        infer_ms = (t2 - t1) * 1e3
        probs = to_probabilities(scores, self._activation)
        tops = topk(probs, self.opts.topk)
        labels = self.model.labels
        for row, it in enumerate(items):
            t3 = time.perf_counter()
            p = probs[row]
            d = self.decider.update(p)
            post_ms = (time.perf_counter() - t3) * 1e3 + ((t3 - t2) * 1e3 if row == 0 else 0.0)
            now = time.perf_counter()
            lat = stage_latency(it, infer_ms, post_ms, now)
            for stage, ms in lat.items():
                self.stats.add(stage, ms)
            f = it.frame
            f.probabilities = p
            result = frame_result(f, p, tops[row], d, lat, labels, len(items))
            self.frames += 1
            self.label_changes += d.changed
            self.unknown += d.label == UNKNOWN
            self.latest = result
            self._done_times.append(now)
            yield result, f

    def _corrupt(self, it: Item) -> None:
        self.skipped += 1
        now = time.monotonic()
        if now - self._last_corrupt_event >= 1.0:  # at most one event per second
            self._last_corrupt_event = now
            self.events.emit("corrupt_frame", source=self.capture.spec, frame=it.frame.index, error=it.error, skipped_total=self.skipped + self.capture.skipped)

    def stop(self) -> None:
        """Ask the loop to finish the current frame and end (thread- and signal-safe)."""
        self.stop_event.set()

    def close(self) -> None:
        self.capture.stop()
        if self._own_model:
            self.model.close()

    # -- reporting ------------------------------------------------------------------------
    def _seconds(self) -> float:
        return (self._t_end or time.perf_counter()) - self._t0

    def fps_recent(self) -> float:
        return recent_rate(self._done_times)

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``/healthz`` and ``/metrics`` (safe to call from another thread)."""
        cap = self.capture
        return {
            "info": self.info, "running": self.running, "started": self.started, "frames": self.frames,
            "dropped": cap.dropped, "skipped": self.skipped + cap.skipped, "reconnects": cap.reconnects, "stalls": cap.stalls,
            "label_changes": self.label_changes, "unknown": self.unknown, "fps_recent": self.fps_recent(),
            "last_frame_time": cap.last_frame_time, "latest": self.latest, "stages_recent": self.stats.summary(recent=True),
            "histograms": self.stats.histograms(), "source": cap.spec,
        }

    def summary(self) -> dict[str, Any]:
        seconds = self._seconds()
        stages = self.stats.summary()
        total = self.stats.all["total"].array()
        cap = self.capture
        return {
            "frames": self.frames,
            "seconds": seconds,
            "fps": self.frames / seconds if seconds > 0 else 0.0,
            "latency_ms": percentiles(total),
            "stages_ms": stages,
            "skipped": self.skipped + cap.skipped,
            "dropped": cap.dropped,
            "frames_read": cap.frames_read,
            "reconnects": cap.reconnects,
            "stalls": cap.stalls,
            "label_changes": self.label_changes,
            "unknown": self.unknown,
            "preprocess_in": self.preprocess_in,
            "batch": self.opts.batch,
            "smooth": str(self.decider_spec),
            "events": dict(self.events.counts),
        }


def stream(bundle: str | Path | LoadedBundle, source: SourceLike, opts: RunOptions | None = None) -> Iterator[dict[str, Any]]:
    """Yield one result dict per frame (only label changes with ``opts.events``):
    ``for result in stream(bundle, source): ...``. Breaking out of the loop stops the capture."""
    pipe = Pipeline(bundle, source, opts)
    try:
        for result, _ in pipe.results():
            if pipe.opts.events and not result["changed"]:
                continue
            yield result
    finally:
        pipe.close()


# -- edgefg run -------------------------------------------------------------------------------
def run_pipeline(bundle: str | Path | LoadedBundle, source: SourceLike, opts: RunOptions, handle_signals: bool = True) -> dict[str, Any]:
    """Run until the source ends, ``max_frames`` or SIGTERM/SIGINT; write the sinks; return the summary.

    A fatal source error (retries exhausted) is raised after the sinks are flushed; the error
    carries the summary as ``.summary``.
    """
    pipe = Pipeline(bundle, source, opts)
    roi = (lambda shape: roi_box(pipe.roi, shape)) if pipe.roi is not None else None  # type: ignore[arg-type]
    results = ((DEFAULT_CAMERA, r, f) for r, f in pipe.results())
    return serve(pipe, results, opts, {DEFAULT_CAMERA: roi}, {DEFAULT_CAMERA: pipe.capture.fps}, handle_signals, single=True)


def run_cameras(bundle: str | Path | LoadedBundle, cameras: list[Any], opts: RunOptions, handle_signals: bool = True) -> dict[str, Any]:
    """``run_pipeline`` for several cameras (:class:`~edgefg.runtime.cameras.CameraConfig` list) on one model."""
    from edgefg.runtime.multicam import MultiPipeline

    pipe = MultiPipeline(bundle, cameras, opts)
    rois = {n: ((lambda shape, _c=c: roi_box(_c.roi, shape)) if c.roi is not None else None) for n, c in pipe.cameras.items()}
    fps = {n: c.capture.fps for n, c in pipe.cameras.items()}
    results = ((cam.name, r, f) for cam, r, f in pipe.results())
    return serve(pipe, results, opts, rois, fps, handle_signals, single=False)


DEFAULT_CAMERA = "default"


def serve(pipe: Any, results: Iterator[tuple[str, dict[str, Any], Frame]], opts: RunOptions, rois: dict[str, Any], fps: dict[str, float | None],
          handle_signals: bool, single: bool) -> dict[str, Any]:
    """The sinks around a pipeline: JSON lines, annotated video, HTTP (+ live page), MQTT, stats, signals."""
    from edgefg.runtime.sinks import JsonlSink, Sink, VideoSink

    events = pipe.events
    cameras = list(rois)
    sinks: list[Sink] = []
    videos: dict[str, Sink] = {}
    server = None
    mqtt = None
    live = None
    outputs: list[Any] = []
    old_handlers: dict[int, Any] = {}
    try:
        try:
            jsonl = JsonlSink(opts.output, rotate_mb=opts.rotate_mb, keep=opts.rotate_keep)
        except OSError as exc:
            raise EdgefgError(f"cannot write --output '{opts.output}': {exc.strerror or exc}", "pick a writable path") from None
        sinks.append(jsonl)
        if opts.save_video:
            for cam in cameras:
                path = Path(opts.save_video) if single else Path(opts.save_video).with_name(f"{Path(opts.save_video).stem}-{cam}{Path(opts.save_video).suffix}")
                videos[cam] = VideoSink(path, fps=opts.video_fps or fps.get(cam) or 10.0, roi=rois.get(cam))
                sinks.append(videos[cam])
        if opts.mqtt is not None:
            from edgefg import __version__
            from edgefg.runtime.mqtt import MqttPublisher

            mqtt = MqttPublisher(opts.mqtt, cameras, events, device={"model": pipe.info.get("name", "edgefg"), "sw_version": __version__}).start()
        if opts.http or mqtt is not None:
            from edgefg.runtime.live import LiveOutputs

            live = LiveOutputs(cameras, events, mqtt=mqtt)
        if opts.outputs:
            from edgefg.runtime.output import ServeContext, open_outputs

            outputs = open_outputs(ServeContext(opts, cameras, events, pipe.model, rois, mqtt, pipe.info), opts.outputs)
        if hasattr(pipe, "cameras") and (live is not None or outputs):
            ended = ([live] if live is not None else []) + outputs

            def camera_done(name: str) -> None:
                for o in ended:
                    o.camera_ended(name)

            pipe.on_camera_done = camera_done
        if opts.http:
            from edgefg.runtime.httpd import HealthServer, read_token

            token = read_token(opts.http_token_file) if opts.http_token_file else None
            server = HealthServer(opts.http, pipe.snapshot, stale_after_s=max(30.0, 3 * opts.stall_timeout_s), live=live, token=token,
                                  max_connections=opts.http_max_connections, timeout_s=opts.http_timeout_s, events=events,
                                  extra=(lambda: {"mqtt": mqtt.stats()}) if mqtt is not None else None, outputs=outputs).start()
            events.emit("http_listening", address=server.address, paths=["/", "/stream.mjpg", "/healthz", "/latest", "/metrics", *server.extra_routes], auth=token is not None)
        if handle_signals and threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, _frame: Any) -> None:
                if pipe.stop_event.is_set():  # a second signal: stop now
                    raise KeyboardInterrupt
                events.emit("signal", signal=signal.Signals(signum).name, action="finishing the current frame, then exiting")
                pipe.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, on_signal)
        last_stats = time.monotonic()
        last_frames = 0
        error: EdgefgError | None = None
        try:
            sink_errors: dict[str, float] = {}
            for camera, result, frame in results:
                for s in sinks:
                    if s is jsonl and opts.events and not result["changed"]:
                        continue
                    if s in videos.values() and videos.get(camera) is not s:
                        continue
                    try:
                        s.write(result, frame.image)
                    except OSError as exc:  # a full disk or a vanished mount: keep classifying (and serving /latest)
                        name = type(s).__name__
                        if time.monotonic() - sink_errors.get(name, -1e9) >= 60:
                            sink_errors[name] = time.monotonic()
                            events.emit("sink_error", sink=name, error=f"{exc.strerror or exc}")
                if live is not None:
                    live.on_result(camera, result, frame.image, rois.get(camera))
                for o in outputs:
                    try:
                        o.on_result(camera, result, frame)
                    except OSError as exc:  # e.g. the collect folder's disk is full: keep classifying
                        if time.monotonic() - sink_errors.get(o.name, -1e9) >= 60:
                            sink_errors[o.name] = time.monotonic()
                            events.emit("sink_error", sink=o.name, error=f"{exc.strerror or exc}")
                if opts.stats_every_s and time.monotonic() - last_stats >= opts.stats_every_s:
                    now = time.monotonic()
                    snap = pipe.snapshot()
                    extra = {"stages_ms": pipe.stats.summary(recent=True)} if single else {
                        "cameras": {n: {k: c[k] for k in ("frames", "dropped", "skipped", "reconnects", "stalls")} | {"fps": round(c["fps_recent"], 2)}
                                    for n, c in snap["cameras"].items()}}
                    events.emit("stats", frames=pipe.frames, fps=round((pipe.frames - last_frames) / (now - last_stats), 2),
                                dropped=snap["dropped"], skipped=snap["skipped"], reconnects=snap["reconnects"], **extra,
                                **({"mqtt": mqtt.stats()} if mqtt is not None else {}), **{o.name: o.stats() for o in outputs})
                    last_stats, last_frames = now, pipe.frames
        except SourceError as exc:
            error = exc
        if not single and error is None and not pipe.stop_event.is_set() and pipe.errors():
            errs = pipe.errors()
            error = SourceError("; ".join(f"camera '{n}': {m}" for n, m in errs.items()), "check those cameras; the others ran to their end")
        summary = pipe.summary()
        if live is not None:
            live.close()  # ends open sightings (their 'end' events are spooled before MQTT drains)
        while outputs:  # before MQTT closes: an output may publish its final state
            o = outputs.pop(0)
            summary[o.name] = o.close()
        if mqtt is not None:
            mqtt.close()
            summary["mqtt"] = mqtt.stats()
            mqtt = None
        if error is not None:
            error.summary = summary  # type: ignore[attr-defined]
            raise error
        return summary
    finally:
        for s in [*sinks, *outputs]:  # outputs left here: the run ended on an error
            try:
                s.close()
            except Exception as exc:  # a full disk must not hide the summary
                events.emit("sink_error", sink=getattr(s, "name", type(s).__name__), error=str(exc))
        if mqtt is not None:
            mqtt.close(drain_s=0.5)
        if server is not None:
            server.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        pipe.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The one-line summary ``edgefg run`` prints at the end."""
    lat = summary["latency_ms"]
    if not summary["frames"]:
        return f"0 frames in {summary['seconds']:.2f} s" + "".join(f", {summary[k]} {k}" for k in ("skipped", "reconnects", "stalls") if summary.get(k))
    text = (f"{summary['frames']} frames in {summary['seconds']:.2f} s: {summary['fps']:.1f} FPS, "
            f"latency p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms")
    st = summary.get("stages_ms", {})
    if st:
        text += " | " + ", ".join(f"{k} p50 {v['p50']:.2f}/p95 {v['p95']:.2f}" for k, v in st.items() if k in ("preprocess", "infer", "postprocess"))
    if summary.get("cameras"):
        text += " | " + "; ".join(f"{n}: {c['frames']} frames {c['fps']:.1f} FPS" + (f" {c['reconnects']} reconnects" if c.get("reconnects") else "")
                                  for n, c in summary["cameras"].items())
        if summary.get("mean_batch"):
            text += f" | mean batch {summary['mean_batch']:.2f}"
    extras = [f"{summary[k]} {label}" for k, label in (("dropped", "dropped"), ("skipped", "unreadable skipped"), ("reconnects", "reconnects"), ("stalls", "stalls")) if summary.get(k)]
    if extras:
        text += " | " + ", ".join(extras)
    if summary.get("collect"):
        c = summary["collect"]
        text += f" | collect: {c['kept']} kept, {sum(c['dropped'].values())} dropped, {c['errors']} errors"
    return text
