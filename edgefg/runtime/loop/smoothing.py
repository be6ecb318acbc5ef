"""Temporal smoothing and open-set decisions for video: labels that do not flicker between
near-identical classes, and ``unknown`` instead of a wrong species.

``ema:A``       exponential moving average of the probabilities, ``s = A·p + (1 − A)·s``
                (A = weight of the newest frame: 1 = no smoothing, smaller = smoother).
``majority:N``  the most frequent per-frame decision over the last N frames (ties: the most recent).
``none``        per-frame decisions.
Open-set rejection (``min_confidence``, ``min_margin``) applies to the smoothed probabilities (EMA)
or to each frame before the vote (majority: ``unknown`` is a vote like any other). numpy only.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from edgefg.errors import EdgefgError
from edgefg.runtime.engine.postprocess import UNKNOWN, open_set_label


@dataclass
class SmoothSpec:
    kind: str = "none"  # none | ema | majority
    value: float = 0.0  # EMA weight of the newest frame, or the window length

    @classmethod
    def parse(cls, text: str | None) -> SmoothSpec:
        if not text or text.strip().lower() in ("none", "off"):
            return cls()
        kind, _, arg = text.strip().lower().partition(":")
        try:
            if kind == "ema":
                alpha = float(arg) if arg else 0.5
                if not 0.0 < alpha <= 1.0:
                    raise ValueError
                return cls("ema", alpha)
            if kind in ("majority", "vote"):
                window = int(arg) if arg else 5
                if window < 1:
                    raise ValueError
                return cls("majority", window)
        except ValueError:
            pass
        raise EdgefgError(f"bad --smooth value '{text}'", "use ema:A with 0 < A ≤ 1 (e.g. ema:0.6), majority:N with N ≥ 1 (e.g. majority:5), or none")

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"


@dataclass
class Decision:
    label: str  # a class name or "unknown"
    index: int  # class index, -1 for unknown
    score: float  # smoothed top-1 probability (majority: vote share)
    margin: float  # smoothed top-1 − top-2 probability (majority: per-frame margin)
    changed: bool  # label differs from the previous decision (the first decision counts as a change)


class Decider:
    """Feed per-frame probabilities; get a smoothed, open-set decision per frame."""

    def __init__(self, labels: list[str], smooth: SmoothSpec | str | None = None, min_confidence: float = 0.0, min_margin: float = 0.0) -> None:
        self.labels = labels
        self.spec = smooth if isinstance(smooth, SmoothSpec) else SmoothSpec.parse(smooth)
        self.min_confidence = min_confidence
        self.min_margin = min_margin
        self._ema: np.ndarray | None = None
        self._votes: deque[int] = deque(maxlen=int(self.spec.value) if self.spec.kind == "majority" else 1)
        self._last: str | None = None

    def reset(self) -> None:
        """Forget the history (e.g. after the source was reopened on a different scene)."""
        self._ema = None
        self._votes.clear()

    def update(self, probs: np.ndarray) -> Decision:
        probs = np.asarray(probs, dtype=np.float64)
        if self.spec.kind == "ema":
            a = self.spec.value
            self._ema = probs.copy() if self._ema is None else a * probs + (1.0 - a) * self._ema
            label, index, score, margin = open_set_label(self._ema, self.labels, self.min_confidence, self.min_margin)
        else:
            label, index, score, margin = open_set_label(probs, self.labels, self.min_confidence, self.min_margin)
            if self.spec.kind == "majority":
                self._votes.append(index)
                counts = Counter(self._votes)
                best = max(counts.values())
                index = next(v for v in reversed(self._votes) if counts[v] == best)
                label = self.labels[index] if index >= 0 else UNKNOWN
                score = best / len(self._votes)
        changed = label != self._last
        self._last = label
        return Decision(label, index, float(score), float(margin), changed)
