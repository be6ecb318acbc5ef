"""Many cameras, one model: the names this had before :mod:`edgefg.runtime.loop.camera_loop`, where the loop now lives.

Every camera has its own capture thread (latest-frame slot, reconnect loop, stall detection), decider
(smoothing, open-set thresholds), frame-rate cap and statistics; one loop takes whatever frames are ready
from all cameras, waits at most ``batch_wait_ms`` for more (the nvstreammux idea), and runs them through
the model as one batch. Every result carries ``camera``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.capture.sources import Frame, Source
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.loop.camera_loop import DEFAULT_BATCH_WAIT_MS, Camera, CameraEvents, CameraLoop, RunOptions  # noqa: F401 (re-exported)

_CameraEvents = CameraEvents  # its earlier name


class MultiPipeline(CameraLoop):
    """One bundle, several named cameras: a :class:`CameraLoop`. Iterate :meth:`results` for ``(camera, result, frame)``."""

    def results(self) -> Iterator[tuple[Camera, dict[str, Any], Frame]]:
        return self.run()


def stream_cameras(bundle: str | Path | LoadedBundle, cameras: list[CameraConfig], opts: RunOptions | None = None,
                   sources: dict[str, Source | Callable[[], Source]] | None = None) -> Iterator[dict[str, Any]]:
    """``for result in stream_cameras(bundle, [CameraConfig("feeder", "rtsp://…"), …]): result["camera"] …``
    (only label changes with ``opts.events``). Breaking out of the loop stops every capture."""
    loop = CameraLoop(bundle, cameras, opts, sources=sources)
    try:
        for _, result, _ in loop.run():
            if loop.opts.events and not result["changed"]:
                continue
            yield result
    finally:
        loop.close()
