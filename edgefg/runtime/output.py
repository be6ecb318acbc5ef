"""Field outputs: what ``serve`` drives besides the JSON lines, video and live sinks (collect, drift, …).

An output is registered once, in :data:`OUTPUT_MODULES` (name → module). Its module defines, at top
level and importing only click and the standard library there (the CLI imports it at start-up):

``OPTIONS``                    click option decorators it adds to ``edgefg run``
``options_from_cli(values)``   its options object (or ``None`` when not asked for) from those options'
                               values; ``values`` is the dict of every extra ``run`` option
``open_output(ctx, options)``  an :class:`Output` for one run

The Python API passes ``RunOptions(outputs={"collect": CollectOptions(...)})``. ``serve`` calls
``on_result`` for every classified frame (the frame carries ``probabilities``), ``camera_ended`` when
a camera's capture ends, ``close`` at the end (its dict goes into the run summary under the output's
name), ``stats`` for ``/api/state`` and the live page (``{"summary": {key: scalar}, "cameras": {name:
{key: scalar}}}``: the page shows the scalars under each camera and below the sightings), ``metrics`` for ``/metrics`` and ``routes`` for
extra HTTP paths (served behind the bearer token like every path but ``/healthz``).

An output must never stall or crash inference: an ``OSError`` from ``on_result`` is reported as one
``sink_error`` event a minute and counted, and slow work (disk, a second model) belongs on its own thread.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # the CLI imports this module at start-up: no numpy/OpenCV here
    from edgefg.runtime.events import EventLog
    from edgefg.runtime.sources import Frame

OUTPUT_MODULES: dict[str, str] = {
    "collect": "edgefg.runtime.collect",
    "drift": "edgefg.runtime.drift",
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
    mqtt: Any = None  # MqttPublisher, when --mqtt is given
    info: dict[str, Any] = field(default_factory=dict)

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

    def close(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def metrics(self) -> list[Metric]: ...

    def routes(self) -> dict[str, Route]: ...


def output_module(name: str) -> Any:
    return importlib.import_module(OUTPUT_MODULES[name])


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
