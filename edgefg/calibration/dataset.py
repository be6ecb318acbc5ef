"""ImageFolder data for calibration, training, validation and parity checks (numpy + OpenCV, no torch).

A labelled folder has one sub-folder per class; a flat folder of images is unlabelled. Classes
are matched to the model's labels *by name* — sorted folder order is never assumed to be the
model's output order.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefg.errors import ClassMismatchError, DataError, InputPathError
from edgefg.manifest import Preprocess
from edgefg.runtime.engine.preprocess import IMAGE_SUFFIXES, preprocess, read_image

log = logging.getLogger(__name__)


@dataclass
class Sample:
    path: Path
    label: int | None  # index into the *model's* labels, None when unlabelled


@dataclass
class ImageSet:
    root: Path
    classes: list[str] | None  # class folder names; None for a flat (unlabelled) folder
    samples: list[Sample]
    ignored: list[Path] = field(default_factory=list)  # non-image files that were skipped

    @property
    def labelled(self) -> bool:
        return self.classes is not None


def _images_in(folder: Path, ignored: list[Path]) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            (out if p.suffix.lower() in IMAGE_SUFFIXES else ignored).append(p)
    return out


def scan(root: str | Path, labels: Sequence[str] | None = None) -> ImageSet:
    """Scan ``root`` (ImageFolder or flat folder); map class folders to ``labels`` by name."""
    root = Path(root)
    if not root.exists():
        raise InputPathError(f"data folder '{root}' does not exist", "pass --data DIR with one sub-folder per class")
    if not root.is_dir():
        raise InputPathError(f"data path '{root}' is not a folder", "pass --data DIR with one sub-folder per class")
    ignored: list[Path] = []
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        classes = [d.name for d in subdirs]
        label_index = _align(classes, labels) if labels is not None else {c: i for i, c in enumerate(classes)}
        samples = []
        for d in subdirs:
            images = _images_in(d, ignored)
            if not images:
                raise DataError(
                    f"class folder '{d}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                    "remove the empty folder or add images to it",
                )
            samples += [Sample(p, label_index[d.name]) for p in images]
        loose = _images_in(root, ignored)
        if loose:
            log.warning("%d image(s) directly in '%s' are ignored (they belong to no class folder)", len(loose), root)
        result = ImageSet(root, classes, samples, ignored)
    else:
        images = _images_in(root, ignored)
        if not images:
            raise DataError(
                f"'{root}' contains no images ({len(ignored)} other file(s))",
                "use a folder of .jpg/.png/.bmp images, with one sub-folder per class for labelled data",
            )
        result = ImageSet(root, None, [Sample(p, None) for p in images], ignored)
    if ignored:
        log.warning("ignored %d non-image file(s) in '%s', e.g. '%s'", len(ignored), root, ignored[0].name)
    return result


def _align(classes: list[str], labels: Sequence[str]) -> dict[str, int]:
    """Map each class folder name to the model's label index; error on names the model lacks."""
    index = {name: i for i, name in enumerate(labels)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        missing = [label for label in labels if label not in set(classes)]
        shown = ", ".join(unknown[:8]) + (" …" if len(unknown) > 8 else "")
        hint = f"the model has {len(labels)} labels"
        if missing:
            hint += f"; labels with no folder include: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")
        raise ClassMismatchError(
            f"{len(unknown)} of {len(classes)} class folder(s) are not among the model's labels: {shown}",
            hint + " — rename those folders to the model's label names, or leave them out (data may cover a subset of the model's classes)",
        )
    return {c: index[c] for c in classes}


def stratified_subset(samples: Sequence[Sample], size: int, seed: int = 0, warn: bool = True) -> list[Sample]:
    """Pick ``size`` samples spread over classes round-robin, so every class is represented
    whenever ``size`` ≥ the number of classes (``warn``s when it is not). Unlabelled samples are
    sampled uniformly."""
    rng = random.Random(seed)
    if size >= len(samples):
        return list(samples)
    by_class: dict[int | None, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    for group in by_class.values():
        rng.shuffle(group)
    keys = sorted(by_class, key=lambda k: (k is None, k))
    if len(keys) > size:
        if warn:
            log.warning("calibration size %d is smaller than the %d classes: not every class is represented", size, len(keys))
        rng.shuffle(keys)
    picked: list[Sample] = []
    depth = 0
    while len(picked) < size:
        for k in keys:
            if depth < len(by_class[k]) and len(picked) < size:
                picked.append(by_class[k][depth])
        depth += 1
    return picked


@dataclass
class Batch:
    x: np.ndarray
    labels: np.ndarray  # -1 where unlabelled
    paths: list[Path]


def iter_batches(
    samples: Sequence[Sample], spec: Preprocess, batch_size: int = 1, skipped: list[Path] | None = None
) -> Iterator[Batch]:
    """Decode + preprocess in batches. Corrupt images are skipped with a warning and appended
    to ``skipped`` (so callers can report the count) instead of stopping the run."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    ps: list[Path] = []
    for s in samples:
        try:
            x = preprocess(read_image(s.path), spec)
        except DataError:
            log.warning("skipping corrupt/unreadable image '%s'", s.path)
            if skipped is not None:
                skipped.append(s.path)
            continue
        xs.append(x)
        ys.append(-1 if s.label is None else s.label)
        ps.append(s.path)
        if len(xs) == batch_size:
            yield Batch(np.stack(xs), np.asarray(ys), ps)
            xs, ys, ps = [], [], []
    if xs:
        yield Batch(np.stack(xs), np.asarray(ys), ps)
