"""The one preprocessing function, used for calibration, validation and camera frames alike.

Input is an image as OpenCV decodes it (H×W×3 uint8, BGR); output is one model input sample
in the layout/dtype the manifest names. numpy + OpenCV only.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgefg.errors import DataError
from edgefg.manifest import Preprocess

_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to H×W×3 uint8 BGR; raise :class:`DataError` if it is not an image, or
    (before decoding) if its header declares more than ``max_pixels`` (default: the process-wide
    limit of :mod:`edgefg.runtime.image_limits`)."""
    from edgefg.runtime.image_limits import read_limited

    data = read_limited(path, max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"'{path}' is not a readable image (corrupt or unsupported format)")
    return image


def _resize(image: np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    h, w = image.shape[:2]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return image
    interp = _INTERP.get(interpolation, cv2.INTER_LINEAR)
    # Large down-scaling (camera frames) aliases with cubic/linear kernels: use area filtering
    # for the bulk of it, then the model's own interpolation for the last factor of < 2.
    if h > 2 * th and w > 2 * tw:
        image = cv2.resize(image, (tw * 2, th * 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (tw, th), interpolation=interp)


def geometry(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Resize (shorter side) and centre-crop to ``spec.input_size``; keeps uint8 BGR/RGB as given."""
    th, tw = spec.input_size
    if spec.crop == "none":
        return _resize(image, (th, tw), spec.interpolation)
    h, w = image.shape[:2]
    scale = spec.resize_shorter / min(h, w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    image = _resize(image, (rh, rw), spec.interpolation)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return image[top : top + th, left : left + tw]


def preprocess(image_bgr: np.ndarray, spec: Preprocess) -> np.ndarray:
    """One H×W×3 uint8 BGR image → one model input sample (C,H,W or H,W,C) per ``spec``."""
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    image = geometry(image_bgr, spec)
    if spec.color.upper() == "RGB":
        image = image[:, :, ::-1]
    x = image.astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return _to_model_input(x, spec)


def _to_model_input(x: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Normalized float H×W×C (or N×H×W×C) → the model's dtype (quantized if integer) and layout."""
    if spec.dtype in ("uint8", "int8"):
        if spec.quant_scale is None or spec.quant_zero_point is None:
            raise DataError(f"integer input dtype {spec.dtype} needs quant_scale and quant_zero_point in the manifest")
        info = np.iinfo(spec.dtype)
        x = np.clip(np.round(x / spec.quant_scale + spec.quant_zero_point), info.min, info.max).astype(spec.dtype)
    else:
        x = x.astype(spec.dtype)
    if spec.layout.upper() == "NCHW":
        x = np.moveaxis(x, -1, -3)
    return np.ascontiguousarray(x)


def convert_batch(batch: np.ndarray, src: Preprocess, dst: Preprocess) -> np.ndarray:
    """Re-express a batch prepared for ``src`` in ``dst``'s layout and dtype (e.g. an artifact's
    NCHW float32 samples for a bundle's NHWC int8 input). Geometry and normalization must agree."""
    if src == dst:
        return batch
    same = ("input_size", "resize_shorter", "crop", "interpolation", "mean", "std", "color")
    diff = [k for k in same if getattr(src, k) != getattr(dst, k)]
    if diff:
        raise DataError(f"cannot convert samples between preprocessings that differ in {', '.join(diff)}")
    x = batch
    if src.dtype in ("uint8", "int8"):
        x = (x.astype(np.float32) - (src.quant_zero_point or 0)) * src.quant_scale
    if src.layout.upper() == "NCHW":
        x = np.moveaxis(x, 1, -1)
    return _to_model_input(x.astype(np.float32, copy=False), dst)


def preprocess_batch(images: list[np.ndarray], spec: Preprocess) -> np.ndarray:
    return np.stack([preprocess(im, spec) for im in images])
