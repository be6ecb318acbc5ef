"""The format table: what edgefg knows about each model-file format and each runtime backend, in one place.

``FORMATS`` (one row per file format) and ``BACKENDS`` (one row per runtime backend) are read by
``deploy`` when it wraps a model file (:mod:`edgefg.wrap`), by the converters (file names, default
options, stand-ins), by ``compare``/``tune`` (stand-ins) and by the runtime's backend registry
(:mod:`edgefg.runtime.backends.base`). The two engine rules more than one module needs — OpenVINO's
inference-precision hint and "is this OpenVINO device present" — live here too. Plain data and pure
functions: no engine, numpy or torch import, so the on-device runtime can read it.

Adding a backend = one row in ``BACKENDS`` (+ its module); a new file format = one row in ``FORMATS``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileFormat:
    """A model-file format (the ``format`` of a manifest and of a target profile)."""

    name: str
    model_file: str  # the file a converter writes for this format
    read_by: tuple[str, ...]  # backends that run such a file
    suffixes: tuple[str, ...] = ()  # suffixes of files ``deploy`` wraps as this format (none: only converters write it)


@dataclass(frozen=True)
class BackendInfo:
    """A runtime backend: where its class lives, the pip extra of its engine, and how a host without the device runs its bundles."""

    name: str
    entry: str  # "module:Class", imported only when used
    extra: str  # the pip extra that installs its engine
    # a backend on the deploying host that runs the same model file when this engine exists only on the device
    stand_in: str | None = None


FORMATS: dict[str, FileFormat] = {
    "onnx": FileFormat("onnx", "model.onnx", ("onnxruntime", "openvino"), (".onnx",)),  # OpenVINO reads ONNX directly
    "openvino": FileFormat("openvino", "model.xml", ("openvino",), (".xml",)),
    "tflite": FileFormat("tflite", "model.tflite", ("tflite",), (".tflite",)),
    # the ONNX a TensorRT device builds its engine from (`edgefg build-engine`)
    "tensorrt-onnx": FileFormat("tensorrt-onnx", "model.onnx", ("tensorrt",)),
}

BACKENDS: dict[str, BackendInfo] = {
    "onnxruntime": BackendInfo("onnxruntime", "edgefg.runtime.backends.onnxruntime:OnnxRuntimeBackend", "onnxruntime"),
    "openvino": BackendInfo("openvino", "edgefg.runtime.backends.openvino:OpenVINOBackend", "openvino"),
    "tflite": BackendInfo("tflite", "edgefg.runtime.backends.tflite:TFLiteBackend", "tflite"),
    "tensorrt": BackendInfo("tensorrt", "edgefg.tensorrt.backend:TensorRTBackend", "runtime-tensorrt", stand_in="onnxruntime"),
}

ENGINE_DIR = "engines"  # TensorRT: the bundle folder its device-built engines are cached in (unless overridden)


def format_for_suffix(suffix: str) -> FileFormat | None:
    """The format of a model file ``deploy`` can wrap, by its suffix (None: not one)."""
    return next((f for f in FORMATS.values() if suffix.lower() in f.suffixes), None)


def wrappable_suffixes() -> list[str]:
    return [s for f in FORMATS.values() for s in f.suffixes]


def stand_in(backend: str) -> str | None:
    """The host backend that runs ``backend``'s model file off the device (None: it runs here itself)."""
    info = BACKENDS.get(backend)
    return info.stand_in if info else None


def default_backend_options(backend: str, device: str | None = None) -> dict[str, Any]:
    """The backend options a bundle gets unless a converter sets more."""
    if backend == "onnxruntime":
        return {"providers": ["CPUExecutionProvider"]}
    if backend == "openvino":
        return {"device": device or "CPU"}
    return {}


# -- OpenVINO ------------------------------------------------------------------------------------
# manifest precision -> INFERENCE_PRECISION_HINT for the float parts of the graph. int8 keeps f32 for
# what stays in float, so INT8 vs FP32 comparisons measure quantization only.
_OPENVINO_HINT = {"fp32": "f32", "int8": "f32", "fp16": "f16", "bf16": "bf16"}


def openvino_inference_precision(precision: str, device: str, requested: str | None = None) -> str:
    """The INFERENCE_PRECISION_HINT a bundle of ``precision`` runs with on ``device`` (``requested``: the
    bundle's own option). FP16-compressed weights are decompressed on CPU, where compute stays f32 (OpenVINO
    would otherwise silently run FP32 models in bf16 on CPUs that have it)."""
    hint = requested or _OPENVINO_HINT.get(precision, "f32")
    return "f32" if device == "CPU" and hint == "f16" else hint


def openvino_device_present(device: str, available: Iterable[str]) -> bool:
    """Whether OpenVINO ``device`` (``GPU`` also matches ``GPU.0``) is among ``available``."""
    return any(d == device or d.startswith(device + ".") for d in available)
