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
