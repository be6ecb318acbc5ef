"""The on-device runtime: numpy, OpenCV and one backend; never torch.

``for result in edgefg.runtime.stream(bundle, source): ...`` is the Python callback API
(see :mod:`edgefg.runtime.pipeline`; the camera loop itself is :mod:`edgefg.runtime.loop`). Attributes
are imported lazily so that ``import edgefg.runtime`` stays cheap (the CLI imports submodules of it at start-up).
"""
from __future__ import annotations

from typing import Any

__all__ = ["stream", "run_pipeline", "run_cameras", "RunOptions", "CameraLoop", "Pipeline", "MultiPipeline", "stream_cameras", "CameraConfig", "LoadedBundle",
           "open_source"]


def __getattr__(name: str) -> Any:
    if name in ("stream", "run_pipeline", "run_cameras", "RunOptions", "Pipeline"):
        from edgefg.runtime import pipeline

        return getattr(pipeline, name)
    if name == "CameraLoop":
        from edgefg.runtime.loop import CameraLoop

        return CameraLoop
    if name in ("MultiPipeline", "stream_cameras"):
        from edgefg.runtime import multicam

        return getattr(multicam, name)
    if name == "CameraConfig":
        from edgefg.runtime.cameras import CameraConfig

        return CameraConfig
    if name == "LoadedBundle":
        from edgefg.runtime.model import LoadedBundle

        return LoadedBundle
    if name == "open_source":
        from edgefg.runtime.sources import open_source

        return open_source
    raise AttributeError(f"module 'edgefg.runtime' has no attribute '{name}'")
