"""Training images decoded once and augmented with torch on the training device.

On a GPU, timm's PIL augmentation of a few thousand images costs more than the forward and
backward passes of a small CNN (measured on an H200 with 15 loader workers: ~1,000 images/s, about
3 s per epoch of cub100/train, most of it JPEG decoding and PIL resizing). Fine-grained training
sets are small, so the images fit in memory: decode each once into a square of the model's resize
size (``input / crop_pct``) with the runtime's own geometry (``runtime.preprocess.geometry``: the
model's crop mode, interpolation and resize library), keep them on the device, and draw each batch's
random resized crop, flip and colour jitter there in one batched ``grid_sample``. Without
augmentation a batch is the square's centre crop: the evaluation preprocessing.

What differs from timm's transform, stated: crops are drawn from that square (for a ``center`` model a
4:3 image loses an eighth of its width on each side before cropping), and resampling is bilinear.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefg.calibration.dataset import Sample
from edgefg.errors import DataError
from edgefg.manifest import Preprocess

log = logging.getLogger(__name__)
_MEMO: dict[tuple, CachedImages] = {}  # the last few decoded sets: pruning recovery trains many times on the same images
_MEMO_SIZE = 2


@dataclass
class CachedImages:
    images: Any  # torch uint8, N×3×S×S, RGB
    labels: Any  # torch int64, N
    side: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> CachedImages:
        if self.images.device == device:
            return self
        return CachedImages(self.images.to(device), self.labels.to(device), self.side)


def cache_side(spec: Preprocess) -> int:
    """The stored square's side: the evaluation resize size, before its centre crop."""
    return max(spec.scale_size)


def _square_spec(spec: Preprocess) -> Preprocess:
    """``spec``'s geometry up to its resize, ending in a ``cache_side`` square instead of the input crop."""
    side = cache_side(spec)
    return dataclasses.replace(spec, input_size=(side, side), crop_pct=1.0)


def _decode(path: str, square: Preprocess) -> np.ndarray | None:
    from edgefg.runtime.engine.preprocess import geometry, read_image

    try:
        bgr = read_image(path)
    except DataError:
        return None
    return np.ascontiguousarray(geometry(bgr, square)[:, :, ::-1].transpose(2, 0, 1))  # CHW RGB


def cache_images(samples: Sequence[Sample], spec: Preprocess, device=None, workers: int = 8) -> CachedImages:
    """Decode the labelled ``samples`` once (threads: OpenCV releases the GIL), on ``device``.
    Unreadable images are skipped with a warning, as the loader-based path does."""
    import torch

    square = _square_spec(spec)
    side = cache_side(spec)
    labelled = [s for s in samples if s.label is not None]
    if not labelled:
        raise DataError("training needs labelled images", "pass --data DIR with one sub-folder per class")
    key = (tuple((str(s.path), int(s.label)) for s in labelled), repr(square), str(device))
    if key in _MEMO:
        return _MEMO[key]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(pool.map(lambda s: _decode(str(s.path), square), labelled))
    keep = [i for i, d in enumerate(decoded) if d is not None]
    for i, d in enumerate(decoded):
        if d is None:
            log.warning("skipping unreadable training image '%s'", labelled[i].path)
    if not keep:
        raise DataError("no readable training images")
    images = torch.from_numpy(np.stack([decoded[i] for i in keep]))
    labels = torch.tensor([int(labelled[i].label) for i in keep], dtype=torch.long)
    cached = CachedImages(images, labels, side).to(torch.device(device) if device is not None else images.device)
    while len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = cached
    return cached


def augment(
    images,
    spec: Preprocess,
    generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    jitter: float = 0.2,
):
    """A uint8 N×3×S×S batch → the normalised float batch the model takes: per image a random
    resized crop (area fraction in ``scale``, aspect in ``ratio``), a horizontal flip with
    probability ``hflip``, brightness/contrast/saturation factors in [1-jitter, 1+jitter]."""
    import torch
    import torch.nn.functional as F

    n, dev = images.shape[0], images.device

    def uniform(lo: float, hi: float):
        return torch.rand(n, device=dev, generator=generator) * (hi - lo) + lo

    area = uniform(*scale)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)  # fractions of the square's side
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (uniform(-1.0, 1.0)) * (1.0 - w)  # crop centre in normalised coordinates: the crop stays inside
    cy = (uniform(-1.0, 1.0)) * (1.0 - h)
    flip = torch.where(torch.rand(n, device=dev, generator=generator) < hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    out_h, out_w = spec.input_size
    grid = F.affine_grid(theta, [n, 3, out_h, out_w], align_corners=False)
    x = F.grid_sample(images.float() / 255.0, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        shape = (n, 1, 1, 1)
        x = x * uniform(1 - jitter, 1 + jitter).view(shape)  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - jitter, 1 + jitter).view(shape) + mean  # contrast
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * uniform(1 - jitter, 1 + jitter).view(shape) + gray  # saturation
        x = x.clamp(0.0, 1.0)
    return normalise(x, spec)


def centre(images, spec: Preprocess):
    """The un-augmented batch (``augment=False``): the input-size centre crop of the stored square, normalised —
    the evaluation preprocessing (``runtime.preprocess``), crop included."""
    h, w = spec.input_size
    side = images.shape[-1]
    top, left = int(round((side - h) / 2.0)), int(round((side - w) / 2.0))
    return normalise(images[..., top : top + h, left : left + w].float() / 255.0, spec)


def normalise(x, spec: Preprocess):
    """0..1 RGB pixels → the model's input: channel order, then (x - mean) / std of ``spec``."""
    import torch

    if spec.color.upper() == "BGR":
        x = x.flip(1)
    m = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s
