"""The one preprocessing function, used for calibration, validation and camera frames alike.

Input is an image as OpenCV decodes it (H×W×3 uint8, BGR); output is one model input sample
in the layout/dtype the manifest names. numpy + OpenCV only.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgefg.errors import DataError, UnsupportedError
from edgefg.manifest import CROP_MODES, OPENCV_INTERPOLATIONS, PIL_INTERPOLATIONS, RESIZERS, Preprocess

_CV_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to H×W×3 uint8 BGR; raise :class:`DataError` if it is not an image, or
    (before decoding) if its header declares more than ``max_pixels`` (default: the process-wide
    limit of :mod:`edgefg.runtime.image_limits`).

    Decoded as timm's loader (PIL ``convert('RGB')``) sees it: EXIF orientation is *not* applied
    (the model was trained and evaluated on the stored pixels), grayscale is replicated to three
    channels, alpha is dropped (not composited), 16-bit samples keep their high byte, CMYK is
    converted by the decoder. Identical to PIL on the cub100 JPEGs (tests check each case).
    """
    from edgefg.runtime.image_limits import read_limited

    data = read_limited(path, max_pixels)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise DataError(f"'{path}' is not a readable image (corrupt or unsupported format)")
    return image


def check_supported(spec: Preprocess) -> None:
    """Raise :class:`UnsupportedError` naming the option edgefg cannot honour exactly."""
    if spec.crop_mode not in CROP_MODES:
        raise UnsupportedError(f"crop_mode '{spec.crop_mode}' is not supported (edgefg has {', '.join(CROP_MODES)})", "pass --crop-mode")
    if spec.resize not in RESIZERS:
        raise UnsupportedError(f"resize '{spec.resize}' is not supported (edgefg has {', '.join(RESIZERS)})", "pass --resize pil or opencv")
    allowed = PIL_INTERPOLATIONS if spec.resize == "pil" else OPENCV_INTERPOLATIONS
    if spec.interpolation not in allowed:
        raise UnsupportedError(
            f"interpolation '{spec.interpolation}' cannot be done with the {spec.resize} resizer (it has {', '.join(allowed)})",
            "pass --interpolation" + (" or --resize opencv" if spec.interpolation in OPENCV_INTERPOLATIONS else " or --resize pil"),
        )
    if not 0 < spec.crop_pct <= 1.0:
        raise UnsupportedError(f"crop_pct {spec.crop_pct} is outside (0, 1]", "pass --crop-pct")


def _resize(image: np.ndarray, size_hw: tuple[int, int], spec: Preprocess) -> np.ndarray:
    h, w = image.shape[:2]
    th, tw = size_hw
    if (h, w) == (th, tw):
        return image
    if spec.resize == "pil":  # exactly what torchvision's Resize does to a PIL image (antialiased)
        from PIL import Image

        mode = getattr(Image.Resampling, spec.interpolation.upper())
        return np.asarray(Image.fromarray(image).resize((tw, th), mode))
    interp = _CV_INTERP[spec.interpolation]
    # Large down-scaling (camera frames) aliases with cubic/linear kernels: use area filtering
    # for the bulk of it, then the model's own interpolation for the last factor of < 2.
    if h > 2 * th and w > 2 * tw:
        image = cv2.resize(image, (tw * 2, th * 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (tw, th), interpolation=interp)


def _center_crop_or_pad(image: np.ndarray, size_hw: tuple[int, int], fill: tuple[int, ...]) -> np.ndarray:
    """torchvision/timm centre crop: pad (left/top get the smaller half) when smaller, then crop
    at round((H - h) / 2), round((W - w) / 2)."""
    th, tw = size_hw
    h, w = image.shape[:2]
    if th > h or tw > w:
        ph, pw = max(th - h, 0), max(tw - w, 0)
        image = cv2.copyMakeBorder(image, ph // 2, (ph + 1) // 2, pw // 2, (pw + 1) // 2, cv2.BORDER_CONSTANT, value=fill)
        h, w = image.shape[:2]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return image[top : top + th, left : left + tw]


def resize_size(hw: tuple[int, int], spec: Preprocess) -> tuple[int, int]:
    """(H, W) an image of size ``hw`` is resized to before the crop, as timm computes it."""
    h, w = hw
    sh, sw = spec.scale_size
    if spec.crop_mode == "squash":
        return sh, sw
    if spec.crop_mode == "border":  # ResizeKeepRatio(longest=1): the longer side fits
        ratio = max(h / sh, w / sw)
        return round(h / ratio), round(w / ratio)
    if sh == sw:  # torchvision Resize(int): shorter side to sh, the longer one truncated
        short, long = min(h, w), max(h, w)
        new_long = int(sh * long / short)
        return (sh, new_long) if h <= w else (new_long, sh)
    ratio = min(h / sh, w / sw)  # ResizeKeepRatio(longest=0) for non-square sizes
    return round(h / ratio), round(w / ratio)


def geometry(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Resize and crop (or pad) to ``spec.input_size`` per its crop mode; uint8 BGR in and out."""
    image = _resize(image, resize_size(image.shape[:2], spec), spec)
    fill = border_fill(spec) if spec.crop_mode == "border" else (0, 0, 0)
    return _center_crop_or_pad(image, spec.input_size, fill)


def border_fill(spec: Preprocess) -> tuple[int, int, int]:
    """BGR pixel that ``border`` mode pads with: timm's round(255 × mean), mean in the model's order."""
    if spec.border_fill is not None:
        return tuple(int(v) for v in spec.border_fill)  # type: ignore[return-value]
    fill = tuple(round(255 * v) for v in spec.mean)
    return fill[::-1] if spec.color.upper() == "RGB" else fill  # type: ignore[return-value]


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
    diff = [k for k in Preprocess.GEOMETRY if getattr(src, k) != getattr(dst, k)]
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


def describe(spec: Preprocess) -> str:
    """One line a person can check against their training code."""
    sh, sw = spec.scale_size
    h, w = spec.input_size
    how = {
        "center": f"resize shorter side to {sh}" if sh == sw else f"resize to cover {sh}×{sw}",
        "squash": f"resize to {sh}×{sw} (aspect ratio not kept)",
        "border": f"fit longer side into {sh}×{sw}, pad",
    }[spec.crop_mode]
    crop = "" if (sh, sw) == (h, w) and spec.crop_mode == "squash" else f", centre crop {h}×{w}"
    return f"{how}{crop}, {spec.interpolation} ({spec.resize}), crop_mode {spec.crop_mode}, crop_pct {spec.crop_pct:g}"
