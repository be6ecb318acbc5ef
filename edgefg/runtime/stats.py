"""Bounded-memory latency statistics for runs that last months (numpy only).

:class:`StageStats` keeps, per stage, a fixed-size uniform reservoir of all samples (for the final
percentiles) and a fixed-size window of recent samples (for ``--stats-every`` and ``/metrics``):
memory does not grow with the number of frames.
"""
from __future__ import annotations

import random
import threading
from typing import Iterable

import numpy as np

from edgefg.runtime.timing import percentiles

STAGES = ("read", "preprocess", "infer", "postprocess", "total", "end_to_end")


class Reservoir:
    """Uniform sample of at most ``size`` values out of all values seen (Vitter's algorithm R)."""

    def __init__(self, size: int = 8192, seed: int = 0) -> None:
        self.size = size
        self.values = np.empty(size, np.float64)
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        if self.seen < self.size:
            self.values[self.seen] = value
        else:
            j = self._rng.randrange(self.seen + 1)
            if j < self.size:
                self.values[j] = value
        self.seen += 1

    def array(self) -> np.ndarray:
        return self.values[: min(self.seen, self.size)]


class Window:
    """The last ``size`` values (ring buffer)."""

    def __init__(self, size: int = 2048) -> None:
        self.values = np.empty(size, np.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % self.values.size] = value
        self.count += 1

    def array(self) -> np.ndarray:
        return self.values[: min(self.count, self.values.size)]

    def clear(self) -> None:
        self.count = 0


class StageStats:
    """Per-stage latency (ms): all-run percentiles + a resettable recent window."""

    def __init__(self, stages: Iterable[str] = STAGES, reservoir: int = 8192, window: int = 2048) -> None:
        self.all = {s: Reservoir(reservoir) for s in stages}
        self.recent = {s: Window(window) for s in stages}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.all[stage].add(ms)
            self.recent[stage].add(ms)

    def summary(self, recent: bool = False) -> dict[str, dict[str, float]]:
        with self._lock:
            src = self.recent if recent else self.all
            out = {}
            for stage, store in src.items():
                a = store.array()
                if a.size:
                    p = percentiles(a)
                    out[stage] = {k: round(p[k], 3) for k in ("p50", "p95", "p99", "mean")}
            return out

    def reset_recent(self) -> None:
        with self._lock:
            for w in self.recent.values():
                w.clear()
