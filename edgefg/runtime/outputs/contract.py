"""Run outputs: everything ``serve`` drives besides the camera loop, under one :class:`Output` protocol.

The built-in ones (JSON lines and video in :mod:`~edgefg.runtime.outputs.sinks`, the live state and MQTT in
:mod:`~edgefg.runtime.outputs.live`, HTTP in :mod:`~edgefg.runtime.outputs.httpd`) are opened from ``RunOptions`` by
:func:`edgefg.runtime.serve.open_run_outputs`; *field outputs* (collect, drift, …) are registered
once, in :data:`OUTPUT_MODULES` (name → module). A field output's module defines, at top level and
importing only click and the standard library there (the CLI imports it at start-up):

``OPTIONS``                    click option decorators it adds to ``edgefg run``
``options_from_cli(values)``   its options object (or ``None`` when not asked for) from those options'
                               values; ``values`` is the dict of every extra ``run`` option
``open_output(ctx, options)``  an :class:`Output` for one run

The Python API passes ``RunOptions(outputs={"collect": CollectOptions(...)})``. ``serve`` calls
``on_result`` for every classified frame (the frame carries ``probabilities``), ``camera_ended`` when
a named camera's capture ends, ``close`` at the end (a dict goes into the run summary under the output's
name; ``None``: nothing), ``stats`` for the periodic ``stats`` event, ``/api/state`` and the live page
(a field output's: ``{"summary": {key: scalar}, "cameras": {name: {key: scalar}}}``: the page shows the
scalars under each camera and below the sightings; MQTT's: its connection counters, in the page's header;
``None``: nothing to show), ``metrics`` for ``/metrics`` and ``routes``
for extra HTTP paths (served behind the bearer token like every path but ``/healthz``). Optional:
``close_order`` (default 1; the live state 0: it ends the sightings whose events others publish; MQTT 2:
it drains what the others published; HTTP 3) and ``abort()`` (the close after an error; default ``close``).

An output must never stall or crash inference: an ``OSError`` from ``on_result`` or ``camera_ended`` is
reported as one ``sink_error`` event a minute (:class:`Outputs`), and slow work (disk, a second model)
belongs on its own thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edgefg.lazy import pick, resolve

if TYPE_CHECKING:  # the CLI imports this module at start-up: no numpy/OpenCV here
    from edgefg.runtime.capture.sources import Frame
    from edgefg.runtime.loop.events import EventLog

OUTPUT_MODULES: dict[str, str] = {
    "collect": "edgefg.runtime.outputs.collect",
    "drift": "edgefg.runtime.outputs.drift",
}

RoiBox = Callable[[tuple[int, ...]], tuple[int, int, int, int]]
# a route answers (status, body, content type); a body may be an iterable of bytes (streamed, connection closed at its end)
Route = Callable[[dict[str, str]], tuple[int, "str | bytes | Iterable[bytes]", str]]
# one Prometheus metric: (name without the edgefg_ prefix, counter|gauge, help, [(labels, value)])
Metric = tuple[str, str, str, Sequence[tuple[dict[str, Any], float]]]


@dataclass
class ServeContext:
    """What an output may use: the run's options, cameras, event log and the loaded bundle."""

    opts: Any  # RunOptions
    cameras: list[str]
    events: EventLog
    model: Any  # LoadedBundle (labels, manifest, directory, prepare, scores)
    rois: dict[str, RoiBox | None] = field(default_factory=dict)
    mqtt: Any = None  # MqttPublisher, when --mqtt is given (set when the MQTT output opens, before the outputs that publish)
    info: dict[str, Any] = field(default_factory=dict)
    snapshot: Callable[[], dict[str, Any]] | None = None  # the loop's counters (HTTP: /healthz, /metrics, the page)
    fps: dict[str, float | None] = field(default_factory=dict)  # each camera's source frame rate, when it tells (video)
    named: bool = True  # False: the classic single source (no camera name in file names)
    camera_opts: dict[str, Any] = field(default_factory=dict)  # RunOptions per camera (the run's with the camera's overrides)

    def options(self, camera: str) -> Any:
        """The options ``camera`` runs with (its own min_confidence, min_margin, roi, smooth…), else the run's."""
        return self.camera_opts.get(camera, self.opts)

    def crop(self, camera: str, image: Any) -> Any:
        """The part of ``image`` the model saw (the camera's ROI, else the whole frame)."""
        box = self.rois.get(camera)
        if box is None:
            return image
        x, y, w, h = box(image.shape)
        return image[y : y + h, x : x + w]


@runtime_checkable
class Output(Protocol):
    name: str

    def on_result(self, camera: str, result: dict[str, Any], frame: Frame) -> None: ...

    def camera_ended(self, camera: str) -> None: ...

    def close(self) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, Any] | None: ...

    def metrics(self) -> list[Metric]: ...

    def routes(self) -> dict[str, Route]: ...


class OutputBase:
    """Defaults for an :class:`Output` that needs only some of the calls (the built-in outputs subclass it)."""

    name = "output"
    close_order = 1  # the live state 0 (it ends the sightings others publish), MQTT 2 (it drains what they published), HTTP 3

    def on_result(self, camera: str, result: dict[str, Any], frame: Frame) -> None:
        pass

    def camera_ended(self, camera: str) -> None:
        pass

    def close(self) -> dict[str, Any] | None:
        return None

    def abort(self) -> None:
        """Close after an error: quickly, and without what only a clean end should do."""
        self.close()

    def stats(self) -> dict[str, Any] | None:
        return None

    def metrics(self) -> list[Metric]:
        return []

    def routes(self) -> dict[str, Route]:
        return {}


class Outputs:
    """The run's outputs, driven together by ``serve`` (fed in the order given). An ``OSError`` from one
    (a full disk, a vanished mount) is one ``sink_error`` event a minute for that output, and inference
    goes on."""

    def __init__(self, outputs: Sequence[Output], events: EventLog) -> None:
        self.outputs = list(outputs)
        self.events = events
        self._open = sorted(self.outputs, key=lambda o: getattr(o, "close_order", 1))  # stable: ties close in the order they were opened
        self._last_error: dict[str, float] = {}

    def _failed(self, o: Output, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error.get(o.name, -1e9) >= 60:
            self._last_error[o.name] = now
            self.events.emit("sink_error", sink=o.name, error=f"{exc.strerror or exc}")

    def on_result(self, camera: str, result: dict[str, Any], frame: Frame) -> None:
        for o in self.outputs:
            try:
                o.on_result(camera, result, frame)
            except OSError as exc:  # keep classifying (and serving /latest)
                self._failed(o, exc)

    def camera_ended(self, camera: str) -> None:
        for o in self.outputs:
            try:
                o.camera_ended(camera)
            except OSError as exc:
                self._failed(o, exc)

    def stats(self) -> dict[str, Any]:
        """``{name: stats}`` of the outputs that report any (the ``stats`` event)."""
        return {o.name: s for o in self.outputs if (s := o.stats()) is not None}

    def close(self) -> dict[str, Any]:
        """Close every output by ``close_order`` (the live state first: it ends the open sightings; MQTT
        next to last: it drains what the others published; HTTP last); ``{name: dict}`` for the summary."""
        out: dict[str, Any] = {}
        while self._open:
            o = self._open.pop(0)
            try:
                result = o.close()
            except Exception as exc:  # a full disk must not hide the summary
                self.events.emit("sink_error", sink=o.name, error=str(exc))
                continue
            except BaseException:
                if hasattr(o, "abort"):  # interrupted (a second signal): abort() finishes it
                    self._open.insert(0, o)
                raise
            if result is not None:
                out[o.name] = result
        return out

    def abort(self) -> None:
        """After an error: close what is still open (``abort()`` where an output has one: MQTT drains 0.5 s,
        the live state ends no sighting); never raises."""
        while self._open:
            o = self._open.pop(0)
            try:
                getattr(o, "abort", o.close)()
            except Exception as exc:
                self.events.emit("sink_error", sink=o.name, error=str(exc))


def output_module(name: str) -> Any:
    return resolve(pick(OUTPUT_MODULES, name, "run output"))


def click_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``edgefg run`` with every registered output's options."""
    for name in reversed(list(OUTPUT_MODULES)):
        for option in reversed(output_module(name).OPTIONS):
            f = option(f)
    return f


def options_from_cli(values: dict[str, Any]) -> dict[str, Any]:
    """The extra ``run`` option values → ``{output name: options}`` for those asked for."""
    out: dict[str, Any] = {}
    for name in OUTPUT_MODULES:
        opts = output_module(name).options_from_cli(values)
        if opts is not None:
            out[name] = opts
    return out


def open_outputs(ctx: ServeContext, wanted: dict[str, Any]) -> list[Output]:
    """One output per entry of ``RunOptions.outputs``, in registry order; closes the opened ones if one fails."""
    from edgefg.errors import EdgefgError

    unknown = set(wanted) - set(OUTPUT_MODULES)
    if unknown:
        raise EdgefgError(f"unknown run outputs {sorted(unknown)}", f"known: {', '.join(OUTPUT_MODULES)}")
    opened: list[Output] = []
    try:
        for name in OUTPUT_MODULES:
            if wanted.get(name) is not None:
                opened.append(output_module(name).open_output(ctx, wanted[name]))
    except BaseException:
        for o in opened:
            try:
                o.close()
            except Exception:
                pass
        raise
    return opened
