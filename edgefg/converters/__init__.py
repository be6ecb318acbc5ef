"""Converters: functions from one model format to another, registered under ``(src, dst)``.

``deploy`` asks :func:`find_converter` for the one converter from the artifact's format to the
target's format. A converter module registers itself with :func:`register`; adding one = a module
plus its name in ``CONVERTER_MODULES``; the file name it writes and the backend options a bundle
gets by default come from the format table (:mod:`edgefg.formats`). Heavy libraries are imported inside the functions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import TargetError, UnsupportedError
from edgefg.lazy import resolve
from edgefg.manifest import Manifest, Preprocess, TensorSpec  # standard library only: no circle
from edgefg.targets import Target

CONVERTER_MODULES = [
    "edgefg.converters.onnx_passthrough",
    "edgefg.converters.onnx_to_openvino",
    "edgefg.converters.onnx_to_tflite",
    "edgefg.tensorrt.convert",
]


@dataclass
class ConvertRequest:
    """What a converter gets: the source file, where to write, and the deploy context."""

    src: Path
    out_dir: Path
    precision: str
    target: Target
    manifest: Manifest  # the source artifact's
    samples: np.ndarray | None = None  # preprocessed calibration/parity samples
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConvertResult:
    model_file: str  # relative to out_dir
    notes: list[str] = field(default_factory=list)
    backend_options: dict[str, Any] = field(default_factory=dict)
    # backend that runs model_file on the deploying host for the parity check when the target's
    # engine exists only on the device (TensorRT: the ONNX it builds from, run in ONNX Runtime)
    host_backend: str | None = None
    inputs: list[TensorSpec] | None = None  # when the converter changed them (e.g. a fixed batch)
    outputs: list[TensorSpec] | None = None
    preprocess: Preprocess | None = None  # when the converter changed the input layout/dtype (NHWC int8 TFLite)


@dataclass(frozen=True)
class Converter:
    src: str
    dst: str
    fn: Callable[[ConvertRequest], ConvertResult]
    description: str
    calibrates: bool = False  # quantizes from ConvertRequest.samples: deploy gives it --calib-size images


_REGISTRY: dict[tuple[str, str], Converter] = {}


def require_matching_quantization(req: ConvertRequest, int8_means: str = "INT8 needs an INT8 artifact") -> None:
    """For converters that take the artifact's quantization as it is: an INT8 (Q/DQ) artifact deploys
    only as INT8, and INT8 needs an INT8 artifact."""
    if req.manifest.precision == "int8" and req.precision != "int8":
        raise TargetError(
            f"the artifact is INT8; it cannot be deployed as {req.precision}",
            f"compress with --recipe fp32 and deploy that with --precision {req.precision}",
        )
    if req.manifest.precision != "int8" and req.precision == "int8":
        raise TargetError(f"the artifact is not quantized; {int8_means}", "run: edgefg compress MODEL --data DIR --recipe int8 -o ART, then deploy ART")


def register(src: str, dst: str, description: str, calibrates: bool = False) -> Callable:
    def deco(fn: Callable[[ConvertRequest], ConvertResult]) -> Callable:
        _REGISTRY[(src, dst)] = Converter(src, dst, fn, description, calibrates)
        return fn

    return deco


def registry() -> dict[tuple[str, str], Converter]:
    for name in CONVERTER_MODULES:
        resolve(name)
    return dict(_REGISTRY)


def find_converter(src: str, dst: str) -> Converter:
    """The converter from ``src`` to ``dst``. Every conversion edgefg makes is one step from the
    artifact's ONNX (a converter that needs an intermediate format does that inside itself), so
    there is no chain search: a chain would have to carry every step's notes and options."""
    reg = registry()
    if (src, dst) in reg:
        return reg[(src, dst)]
    known = ", ".join(f"{a}->{b}" for a, b in sorted(reg))
    raise UnsupportedError(f"no conversion from '{src}' to '{dst}'", f"available converters: {known}")
