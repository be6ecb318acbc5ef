"""``edgefg run``: a :class:`~edgefg.runtime.loop.camera_loop.CameraLoop` (capture → preprocess → infer, optionally
micro-batched → postprocess: softmax, top-k, smoothing, open-set rejection) driven by :func:`serve` into
the run's outputs (JSON lines, video, MQTT, the live page and HTTP, field outputs such as collect/drift).

Python API::

    for result in edgefg.runtime.stream("bundle/", "rtsp://cam/stream", RunOptions(smooth="ema:0.6")):
        print(result["label"], result["score"])

``run_pipeline`` (one source) and ``run_cameras`` (named cameras) are what ``edgefg run`` calls: they add
the outputs, SIGTERM/SIGINT handling (finish the current frame, flush, summarize) and return the summary.
numpy + OpenCV + one backend; never torch.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgefg.errors import SourceError
from edgefg.runtime.capture.cameras import DEFAULT_NAME, CameraConfig
from edgefg.runtime.capture.reader import Capture
from edgefg.runtime.capture.sources import Frame, Source
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.loop.camera_loop import ROI, CameraLoop, OneSource, RunOptions, SourceLike, frame_result, parse_roi, roi_box, stage_latency  # noqa: F401 (re-exported)
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.loop.smoothing import Decider
from edgefg.runtime.loop.stats import StageStats
from edgefg.runtime.outputs.contract import Output, Outputs, ServeContext, open_outputs
from edgefg.runtime.outputs.httpd import open_http
from edgefg.runtime.outputs.live import open_live, open_mqtt
from edgefg.runtime.outputs.sinks import open_jsonl, open_video

DEFAULT_CAMERA = DEFAULT_NAME  # what /metrics and MQTT call the one source


class Pipeline(CameraLoop):
    """One bundle on one source, the classic ``edgefg run --source URI``: a :class:`CameraLoop` of one
    unnamed camera (:class:`~edgefg.runtime.loop.camera_loop.OneSource`). Iterate :meth:`results` for ``(result, frame)``;
    read :meth:`summary` / :meth:`snapshot`."""

    def __init__(self, bundle: str | Path | LoadedBundle, source: SourceLike, opts: RunOptions | None = None, events: EventLog | None = None):
        given = source if isinstance(source, Source) or callable(source) else None
        super().__init__(bundle, [CameraConfig(DEFAULT_CAMERA, str(source))], opts, events,
                         sources={DEFAULT_CAMERA: given} if given is not None else None, layout=OneSource())

    def results(self) -> Iterator[tuple[dict[str, Any], Frame]]:
        """Yield ``(result, frame)`` for every classified frame until the source ends, ``max_frames``
        or :meth:`stop`. Raises the capture's fatal error (e.g. retries exhausted) at the end."""
        for _, result, frame in self.run():
            yield result, frame
        error = self.failure()
        if error is not None:
            raise error

    # the one camera's parts, under the names they have always had
    @property
    def capture(self) -> Capture:
        return self.only_camera.capture

    @property
    def stats(self) -> StageStats:
        return self.only_camera.stats

    @property
    def decider(self) -> Decider:
        return self.only_camera.decider

    @property
    def roi(self) -> ROI | None:
        return self.only_camera.roi

    @property
    def preprocess_in(self) -> str:
        return "capture" if self.only_camera.prepare_in_capture else "main"

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.only_camera.latest


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
    """Run until the source ends, ``max_frames`` or SIGTERM/SIGINT; write the outputs; return the summary.

    A fatal source error (retries exhausted) is raised after the outputs are closed; the error
    carries the summary as ``.summary``.
    """
    return serve(Pipeline(bundle, source, opts), opts, handle_signals)


def run_cameras(bundle: str | Path | LoadedBundle, cameras: list[CameraConfig], opts: RunOptions, handle_signals: bool = True) -> dict[str, Any]:
    """``run_pipeline`` for several cameras (:class:`~edgefg.runtime.capture.cameras.CameraConfig` list) on one model."""
    return serve(CameraLoop(bundle, cameras, opts), opts, handle_signals)


def open_run_outputs(ctx: ServeContext) -> Outputs:
    """Every output the run's options ask for, opened in this order: JSON lines (always), video, MQTT
    (before what publishes through it: it sets ``ctx.mqtt``), the live state (newest frames, sightings),
    the field outputs of ``RunOptions.outputs``, HTTP (last: it serves the others' routes, metrics and
    stats). If one cannot be opened, those already open are closed."""
    opened: list[Output] = []

    def add(o: Output | None) -> Output | None:
        if o is not None:
            opened.append(o)
        return o

    try:
        add(open_jsonl(ctx))
        add(open_video(ctx))
        mqtt = add(open_mqtt(ctx))
        live = add(open_live(ctx))
        fields = open_outputs(ctx, ctx.opts.outputs)
        others = list(opened)
        opened += fields
        add(open_http(ctx, live, fields, others))
    except BaseException:
        Outputs(opened, ctx.events).abort()
        raise
    if mqtt is not None and live is not None:  # fed after the live state: a frame's sighting events are spooled before its state goes out
        opened.remove(mqtt)
        opened.insert(opened.index(live) + 1, mqtt)
    return Outputs(opened, ctx.events)


def serve(loop: CameraLoop, opts: RunOptions | None = None, handle_signals: bool = True) -> dict[str, Any]:
    """A camera loop into the run's outputs: every result to each output, a camera that ends to each,
    a ``stats`` event every ``stats_every_s``, SIGTERM/SIGINT (finish the current frame, then end), and
    at the end the outputs closed into the loop's summary."""
    opts = opts or loop.opts
    events = loop.events
    outputs: Outputs | None = None
    old_handlers: dict[int, Any] = {}
    try:
        ctx = ServeContext(opts, list(loop.cameras), events, loop.model, loop.rois(), info=loop.info, snapshot=loop.snapshot,
                           fps={n: c.capture.fps for n, c in loop.cameras.items()}, named=loop.layout.named,
                           camera_opts={n: c.opts for n, c in loop.cameras.items() if c.opts is not None})
        outputs = open_run_outputs(ctx)
        loop.on_camera_done = outputs.camera_ended
        if handle_signals and threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, _frame: Any) -> None:
                if loop.stop_event.is_set():  # a second signal: stop now
                    raise KeyboardInterrupt
                events.emit("signal", signal=signal.Signals(signum).name, action="finishing the current frame, then exiting")
                loop.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, on_signal)
        last_stats = time.monotonic()
        last_frames = 0
        error: Exception | None = None
        try:
            for camera, result, frame in loop.run():
                outputs.on_result(camera.name, result, frame)
                if opts.stats_every_s and time.monotonic() - last_stats >= opts.stats_every_s:
                    now = time.monotonic()
                    snap = loop.snapshot()
                    events.emit("stats", frames=loop.frames, fps=round((loop.frames - last_frames) / (now - last_stats), 2),
                                dropped=snap["dropped"], skipped=snap["skipped"], reconnects=snap["reconnects"], **loop.stats_fields(snap),
                                **outputs.stats())
                    last_stats, last_frames = now, loop.frames
        except SourceError as exc:
            error = exc
        error = error or loop.failure()
        if error is not None and not isinstance(error, SourceError):
            raise error  # a configuration error (e.g. an ROI outside the frame): no summary
        summary = loop.summary()
        summary.update(outputs.close())
        if error is not None:
            error.summary = summary
            raise error
        return summary
    finally:
        if outputs is not None:
            outputs.abort()  # what an error left open
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        loop.close()


def format_summary(summary: dict[str, Any]) -> str:
    """The one-line summary ``edgefg run`` prints at the end."""
    lat = summary["latency_ms"]
    if not summary["frames"]:
        return f"0 frames in {summary['seconds']:.2f} s" + "".join(f", {summary[k]} {k}" for k in ("skipped", "reconnects", "stalls") if summary.get(k))
    text = (f"{summary['frames']} frames in {summary['seconds']:.2f} s: {summary['fps']:.1f} FPS, "
            f"latency p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms")
    queue = summary.get("queue_ms") or {}
    if queue.get("p50", 0) >= 1.0:  # frames held back by a frame-rate cap or waiting for a busy model: not latency the pipeline adds
        text += f" (+ queued p50 {queue['p50']:.1f} ms, p95 {queue['p95']:.1f} ms before processing)"
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
