"""Agreement with the FP32 model on unlabelled images: the metric of agreement-driven INT8.

Users have 10–30 labelled images per class but thousands of unlabelled frames from their own
cameras. Top-1 on a few labelled images is too noisy to decide which layers INT8 may keep; whether
the INT8 model predicts the same class as the FP32 model needs no labels, so every frame counts.

* :func:`scan_unlabelled` — every image under a folder, recursively; labels (class sub-folders)
  are not needed and not used;
* :func:`load_unlabelled` — those images preprocessed (corrupt ones skipped with a warning);
* :class:`AgreementMetric` — NNCF's ``validation_fn`` for ``quantize_with_accuracy_control``:
  top-1 agreement with the FP32 predictions (computed once), ties broken by the mean KL divergence.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import Sample, iter_batches
from edgefg.errors import DataError, InputPathError
from edgefg.manifest import Preprocess
from edgefg.progress import track
from edgefg.runtime.engine.postprocess import softmax as _softmax
from edgefg.runtime.engine.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_AGREEMENT_SIZE = 2000  # images read (a random subset of a larger folder): memory ≈ 0.6 MB each at 224 px
KL_TIE_WEIGHT = 0.1  # the KL term weighs less than one image's agreement: it only orders equal agreements


@dataclass
class UnlabelledImages:
    root: Path
    x: np.ndarray  # preprocessed N×C×H×W
    paths: list[Path]
    found: int  # images found under root (before any subset)
    skipped: list[Path] = field(default_factory=list)  # corrupt / unreadable
    ignored: int = 0  # non-image files


def scan_unlabelled(root: str | Path) -> tuple[list[Path], int]:
    """Every image file under ``root`` (recursive, hidden entries skipped) and the count of other files."""
    root = Path(root)
    if not root.exists():
        raise InputPathError(f"agreement data folder '{root}' does not exist", "pass --agreement-data DIR: any folder of images (no labels needed)")
    if not root.is_dir():
        raise InputPathError(f"agreement data path '{root}' is not a folder", "pass --agreement-data DIR: any folder of images (no labels needed)")
    images, other = [], 0
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            other += 1
    if not images:
        raise DataError(f"agreement data folder '{root}' contains no images ({other} other file(s))",
                        f"use a folder (sub-folders are searched) of {', '.join(sorted(IMAGE_SUFFIXES))} images")
    if other:
        log.warning("ignored %d non-image file(s) under '%s'", other, root)
    return images, other


def pick_unlabelled(paths: list[Path], size: int | None, seed: int = 0) -> list[Path]:
    """Up to ``size`` of ``paths``: a seeded random subset in file order when there are more (compress and tune alike)."""
    if size is None or size >= len(paths):
        return paths
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), size, replace=False))]


def load_unlabelled(root: str | Path, spec: Preprocess, size: int | None = DEFAULT_AGREEMENT_SIZE, seed: int = 0) -> UnlabelledImages:
    """Preprocess up to ``size`` images under ``root`` (a seeded random subset when there are more)."""
    paths, other = scan_unlabelled(root)
    found = len(paths)
    paths = pick_unlabelled(paths, size, seed)
    skipped: list[Path] = []
    xs, kept = [], []
    samples = [Sample(p, None) for p in paths]
    for b in track(iter_batches(samples, spec, 64, skipped), f"reading {len(paths)} unlabelled agreement images", -(-len(paths) // 64)):
        xs.append(b.x)
        kept += b.paths
    if not xs:
        raise DataError(f"none of the {len(paths)} images under '{root}' could be read", "check the files (corrupt or not images)")
    if skipped:
        log.warning("skipped %d corrupt/unreadable agreement image(s) under '%s'", len(skipped), root)
    return UnlabelledImages(Path(root), np.concatenate(xs), kept, found, skipped, other)


def softmax(logits: np.ndarray) -> np.ndarray:
    """The runtime's softmax, in float64 (KL of near-identical distributions needs the precision)."""
    return _softmax(logits.astype(np.float64))


def kl_per_image(ref_probs: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(FP32 ‖ candidate) of each image, in nats."""
    p = softmax(logits)
    eps = 1e-12
    return np.maximum((ref_probs * (np.log(ref_probs + eps) - np.log(p + eps))).sum(axis=1), 0.0)


def agreement_stats(logits: np.ndarray, ref_logits: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean KL(FP32 ‖ candidate) of ``logits`` with ``ref_logits``."""
    return {
        "agreement": float((logits.argmax(1) == ref_logits.argmax(1)).mean()),
        "mean_kl": float(kl_per_image(softmax(ref_logits), logits).mean()),
        "images": int(len(logits)),
    }


class AgreementMetric:
    """``validation_fn(model, items)`` for NNCF's accuracy control, where ``items`` are indices into ``x``.

    The metric is the top-1 agreement of ``model`` with the FP32 predictions on those images, minus a
    tie-breaker ``KL_TIE_WEIGHT / n * min(mean KL, 1)`` that is smaller than one image's worth of
    agreement: it never reorders two different agreement counts, it only ranks equal ones by how far
    the output distribution moved. Per image: 1 (agrees) or 0, minus ``KL_TIE_WEIGHT * min(KL, 1)``,
    so NNCF's ranking subset takes the flipped images first, then the most disturbed ones.
    FP32 logits are computed once here; NNCF's own call on the FP32 model is answered from them.
    """

    def __init__(self, logits_fn: Callable[[Any, np.ndarray], np.ndarray], reference: Any, x: np.ndarray,
                 note: Callable[[str], None] | None = None):
        self.logits_fn, self.reference, self.x = logits_fn, reference, x
        self.ref_logits = logits_fn(reference, x)
        self.ref_top1 = self.ref_logits.argmax(1)
        self.ref_probs = softmax(self.ref_logits)
        self.note = note or (lambda s: None)
        self.calls = 0
        self.full_runs: list[float] = []  # agreement of every evaluation on all images, in order

    def max_drop(self, min_agreement: float) -> float:
        """NNCF's ``max_drop`` (absolute, from the FP32 model's 1.0) that holds exactly when at least
        ``ceil(min_agreement * n)`` of the n images agree, whatever the KL tie-breaker adds."""
        n = len(self.x)
        need = math.ceil(min_agreement * n - 1e-9)
        return 1.0 - need / n + KL_TIE_WEIGHT / n + 1e-12

    def __call__(self, model: Any, items: Iterable[Any]) -> tuple[float, list[float]]:
        idx = np.fromiter((int(i) for i in items), dtype=np.int64)
        if len(idx) == 0:
            return 0.0, []
        if model is self.reference:
            logits = self.ref_logits[idx]
        else:
            logits = self.logits_fn(model, self.x[idx])
        hits = (logits.argmax(1) == self.ref_top1[idx]).astype(np.float64)
        kl = np.minimum(kl_per_image(self.ref_probs[idx], logits), 1.0)
        agreement = float(hits.mean())
        self.calls += 1
        if len(idx) == len(self.x):
            self.full_runs.append(agreement)
            self.note(f"validation {len(self.full_runs)}: agreement with FP32 {100 * agreement:.2f} % on {len(idx)} images")
        metric = agreement - KL_TIE_WEIGHT / len(idx) * float(kl.mean())
        return metric, (hits - KL_TIE_WEIGHT * kl).tolist()
