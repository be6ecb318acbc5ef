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
    limit of :mod:`edgefg.runtime.engine.image_limits`).

    Decoded as timm's loader (PIL ``convert('RGB')``) sees it: EXIF orientation is *not* applied
    (the model was trained and evaluated on the stored pixels), grayscale is replicated to three
    channels, alpha is dropped (not composited), 16-bit samples keep their high byte, CMYK is
    converted by the decoder. Identical to PIL on the cub100 JPEGs (tests check each case).
    """
    from edgefg.runtime.engine.image_limits import read_limited

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


# The resized, not yet cropped image is built whole only while it is no larger than the decoded
# image or MAX_RESIZE_AREA × the resize size's area (every photo and camera frame: centre mode makes
# it ~aspect × that area). A long thin strip (2×16000 px: 224×1 792 000 px = 1.2 GB once resized, for
# a 224×224 crop) gets only its crop region resized: the same output to float rounding, memory bounded
# by the crop (2×16000 PNG: 5 GB peak RSS and 14 s before, +6 MB and 0.05 s now).
MAX_RESIZE_AREA = 16


def geometry(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """Resize and crop (or pad) to ``spec.input_size`` per its crop mode; uint8 BGR in and out.

    Memory is bounded for any aspect ratio: see :data:`MAX_RESIZE_AREA`."""
    h, w = image.shape[:2]
    rh, rw = resize_size((h, w), spec)
    fill = border_fill(spec) if spec.crop_mode == "border" else (0, 0, 0)
    if not resized_whole((h, w), spec):
        return _resize_crop_region(image, (rh, rw), spec, fill)
    image = _resize(image, (rh, rw), spec)
    return _center_crop_or_pad(image, spec.input_size, fill)


def resized_whole(hw: tuple[int, int], spec: Preprocess) -> bool:
    """Whether an image of size ``hw`` is resized whole before the crop (False: a thin strip, of
    which only the crop region is resized; see :data:`MAX_RESIZE_AREA`)."""
    h, w = hw
    rh, rw = resize_size((h, w), spec)
    sh, sw = spec.scale_size
    return rh * rw <= max(h * w, MAX_RESIZE_AREA * sh * sw)


def _crop_window(r: int, t: int) -> tuple[int, int, int, int]:
    """One axis of :func:`_center_crop_or_pad` on a resized length ``r``, target ``t``:
    (offset into the resized axis, length taken, padding before, padding after)."""
    if t > r:
        p = t - r
        return 0, r, p // 2, p - p // 2
    return int(round((r - t) / 2.0)), t, 0, 0


_SUPPORT = 3.0  # the widest kernel's support (lanczos) in output pixels; wider in source pixels when downscaling


def _cv_positions(dst: np.ndarray, n: int, r: int, interpolation: str) -> np.ndarray:
    """Source coordinates (float32) cv2.resize samples output pixels ``dst`` at, resizing ``n`` to ``r``."""
    scale = n / r
    if interpolation == "area":  # enlarging with INTER_AREA: a linear step only at source pixel edges
        sx = np.floor(dst * scale)
        f = (dst + 1) - (sx + 1) * (r / n)
        return (sx + np.where(f <= 0, 0.0, f - np.floor(f))).astype(np.float32)
    return ((dst + 0.5) * scale - 0.5).astype(np.float32)


def _resize_crop_region(image: np.ndarray, size_hw: tuple[int, int], spec: Preprocess, fill: tuple[int, ...]) -> np.ndarray:
    """``_center_crop_or_pad(_resize(image, size_hw))`` without building the resized image: the crop
    box is taken in source coordinates (plus the kernel's support), and only that region is resized.
    With the ``pil`` resizer this is PIL's own ``box`` resize: the same kernel positions up to float
    rounding (a grey level or two at a few pixels; ``nearest`` may take the neighbour of a pixel that
    sits on a boundary); with ``opencv`` cv2.resize's sample positions for the crop's pixels are
    interpolated by ``cv2.remap`` (1/32-pixel positions: within the resizer's declared approximation).
    Only reached by images that are upscaled and far from square (see :data:`MAX_RESIZE_AREA`), never
    by photos or camera frames."""
    h, w = image.shape[:2]
    rh, rw = size_hw
    th, tw = spec.input_size
    oy, ny, pt, pb = _crop_window(rh, th)
    ox, nx, pl, pr = _crop_window(rw, tw)
    sy, sx = h / rh, w / rw  # source pixels per resized pixel
    my, mx = int(np.ceil(_SUPPORT * max(sy, 1.0))) + 2, int(np.ceil(_SUPPORT * max(sx, 1.0))) + 2
    y0, y1 = max(0, int(np.floor(oy * sy)) - my), min(h, int(np.ceil((oy + ny) * sy)) + my)
    x0, x1 = max(0, int(np.floor(ox * sx)) - mx), min(w, int(np.ceil((ox + nx) * sx)) + mx)
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    if spec.resize == "pil":
        from PIL import Image

        mode = getattr(Image.Resampling, spec.interpolation.upper())
        box = (ox * sx - x0, oy * sy - y0, (ox + nx) * sx - x0, (oy + ny) * sy - y0)
        out = np.asarray(Image.fromarray(region).resize((nx, ny), mode, box=box))
    else:  # cv2.resize's own sample positions for the crop's pixels, then remapped
        ys, xs = np.arange(oy, oy + ny, dtype=np.float64), np.arange(ox, ox + nx, dtype=np.float64)
        if spec.interpolation == "nearest":  # floor(dst × (1 / (dsize / ssize)))
            iy = np.minimum(np.floor(ys * (1.0 / (rh / h))).astype(np.intp), h - 1) - y0
            ix = np.minimum(np.floor(xs * (1.0 / (rw / w))).astype(np.intp), w - 1) - x0
            out = region[iy[:, None], ix[None, :]]
        else:
            at_y = _cv_positions(ys, h, rh, spec.interpolation) - y0
            at_x = _cv_positions(xs, w, rw, spec.interpolation) - x0
            out = cv2.remap(region, np.ascontiguousarray(np.broadcast_to(at_x[None, :], (ny, nx))),
                            np.ascontiguousarray(np.broadcast_to(at_y[:, None], (ny, nx))),
                            cv2.INTER_CUBIC if spec.interpolation == "bicubic" else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if pt or pb or pl or pr:
        out = cv2.copyMakeBorder(out, pt, pb, pl, pr, cv2.BORDER_CONSTANT, value=fill)
    return out


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
    x: np.ndarray = image.astype(np.float32) * (1.0 / 255.0)
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
        if src.quant_scale is None:
            raise DataError(f"integer input dtype {src.dtype} needs quant_scale in the manifest to be read back as floats")
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
