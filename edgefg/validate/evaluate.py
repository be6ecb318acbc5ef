"""Run an opened model over a list of samples, collecting scores and labels."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgefg.calibration.dataset import Sample, iter_batches
from edgefg.progress import track
from edgefg.runtime.engine.bundle import LoadedBundle


@dataclass
class Scored:
    scores: np.ndarray  # (N, classes)
    labels: np.ndarray  # (N,), -1 where unlabelled
    paths: list[Path]
    skipped: list[Path] = field(default_factory=list)  # corrupt images


def score_samples(model: LoadedBundle, samples: Sequence[Sample], batch_size: int = 8, description: str = "scoring") -> Scored:
    skipped: list[Path] = []
    outs, labels, paths = [], [], []
    batch_size = 1 if model.backend.static_batch == 1 else batch_size
    total = (len(samples) + batch_size - 1) // batch_size
    for batch in track(iter_batches(samples, model.manifest.preprocess, batch_size, skipped), description, total):
        outs.append(model.scores(batch.x))
        labels.append(batch.labels)
        paths += batch.paths
    if not outs:
        return Scored(np.zeros((0, len(model.labels)), np.float32), np.zeros(0, int), [], skipped)
    return Scored(np.concatenate(outs), np.concatenate(labels), paths, skipped)
