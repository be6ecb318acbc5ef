"""Scores → probabilities → top-k (numpy only)."""
from __future__ import annotations

import numpy as np


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def to_probabilities(scores: np.ndarray, activation: str = "logits") -> np.ndarray:
    """Scores as the model emits them → probabilities that sum to 1 per row."""
    if activation == "softmax":
        p = np.clip(scores.astype(np.float64), 0, None)
        s = p.sum(axis=1, keepdims=True)
        return np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / scores.shape[1])
    return softmax(scores.astype(np.float64))


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


UNKNOWN = "unknown"


def open_set_label(probs: np.ndarray, labels: list[str], min_confidence: float = 0.0, min_margin: float = 0.0) -> tuple[str, int, float, float]:
    """One probability vector → (label, class index or -1, top-1 probability, top-1 − top-2 margin).

    The label is :data:`UNKNOWN` when the top-1 probability is below ``min_confidence`` or the margin
    to the runner-up is below ``min_margin``: better than naming the wrong species.
    """
    if probs.shape[0] == 1:
        first, second = 0, None
    else:
        two = np.argpartition(-probs, 1)[:2]
        first, second = (int(two[0]), int(two[1])) if probs[two[0]] >= probs[two[1]] else (int(two[1]), int(two[0]))
    conf = float(probs[first])
    margin = conf - float(probs[second]) if second is not None else conf
    if conf < min_confidence or margin < min_margin:
        return UNKNOWN, -1, conf, margin
    return labels[first], first, conf, margin
