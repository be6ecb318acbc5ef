"""The on-device runtime: numpy, OpenCV and one backend; never torch.

``for result in edgefg.runtime.stream(bundle, source): ...`` is the Python callback API
(see :mod:`edgefg.runtime.serve`; the camera loop itself is :mod:`edgefg.runtime.loop.camera_loop`).
Folders: ``engine/`` (bundle, preprocess, postprocess, timing), ``capture/``, ``loop/``, ``outputs/``,
``backends/``; ``serve`` drives a loop into its outputs. Attributes
are imported lazily so that ``import edgefg.runtime`` stays cheap (the CLI imports submodules of it at start-up).
"""
from __future__ import annotations

from typing import Any

__all__ = ["stream", "run_pipeline", "run_cameras", "RunOptions", "CameraLoop", "Pipeline", "MultiPipeline", "stream_cameras", "CameraConfig", "LoadedBundle",
           "open_source"]


def __getattr__(name: str) -> Any:
    if name in ("stream", "run_pipeline", "run_cameras", "RunOptions", "Pipeline"):
        from edgefg.runtime import serve

        return getattr(serve, name)
    if name == "CameraLoop":
        from edgefg.runtime.loop.camera_loop import CameraLoop

        return CameraLoop
    if name in ("MultiPipeline", "stream_cameras"):
        from edgefg.runtime.loop import multicam

        return getattr(multicam, name)
    if name == "CameraConfig":
        from edgefg.runtime.capture.cameras import CameraConfig

        return CameraConfig
    if name == "LoadedBundle":
        from edgefg.runtime.engine.bundle import LoadedBundle

        return LoadedBundle
    if name == "open_source":
        from edgefg.runtime.capture.sources import open_source

        return open_source
    raise AttributeError(f"module 'edgefg.runtime' has no attribute '{name}'")
