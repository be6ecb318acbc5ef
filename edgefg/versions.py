"""Versions of the libraries that touched an artifact (recorded in manifests and reports)."""
from __future__ import annotations

from importlib import metadata

PACKAGES = ("edgefg", "torch", "timm", "nncf", "onnx", "onnxruntime", "openvino", "opencv-python-headless", "numpy",
            "litert-torch", "ai-edge-litert", "tflite-runtime")


def library_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
