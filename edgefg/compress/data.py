"""A torch Dataset over edgefg samples: timm's training augmentation, edgefg's one preprocessing
function for evaluation (so what is trained on is scored exactly as deployed)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from edgefg.calibration.dataset import Sample
from edgefg.errors import DataError
from edgefg.manifest import Preprocess
from edgefg.runtime.engine.preprocess import preprocess, read_image

log = logging.getLogger(__name__)


def train_transform(spec: Preprocess, scale: tuple[float, float] = (0.35, 1.0), color_jitter: float = 0.2):
    """timm's standard training transform (random resized crop, flip, colour jitter, normalise)."""
    from timm.data import create_transform

    return create_transform(
        input_size=(3, *spec.input_size),
        is_training=True,
        scale=scale,
        hflip=0.5,
        color_jitter=color_jitter,
        interpolation=spec.interpolation if spec.interpolation in ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos") else "bilinear",
        mean=tuple(spec.mean),
        std=tuple(spec.std),
    )


class ImageDataset:
    """(image tensor, label) pairs. ``augment`` uses timm's train transform; otherwise
    :func:`edgefg.runtime.engine.preprocess.preprocess`. Unreadable images fall back to a neighbour."""

    def __init__(self, samples: Sequence[Sample], spec: Preprocess, augment: bool = False, scale: tuple[float, float] = (0.35, 1.0)):
        import torch.utils.data  # noqa: F401  (fail early without torch)

        self.samples = [s for s in samples if s.label is not None]
        if not self.samples:
            raise DataError("training needs labelled images", "pass --data DIR with one sub-folder per class")
        self.spec = spec
        self.transform = train_transform(spec, scale) if augment else None
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            if j in self.bad:
                continue
            try:
                bgr = read_image(self.samples[j].path)
            except DataError:
                log.warning("skipping unreadable training image '%s'", self.samples[j].path)
                self.bad.add(j)
                continue
            label = int(self.samples[j].label)
            if self.transform is None:
                return torch.from_numpy(preprocess(bgr, self.spec)), label
            x = self.transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])))
            if self.spec.color.upper() == "BGR":
                x = x.flip(0)
            return x, label
        raise DataError("no readable training images")
