"""Bounded-memory latency statistics for runs that last months (numpy only).

:class:`StageStats` keeps, per stage, a fixed-size uniform reservoir of all samples (for the final
percentiles) and a fixed-size window of recent samples (for ``--stats-every`` and ``/metrics``):
memory does not grow with the number of frames.
"""
from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Iterable

import numpy as np

from edgefg.runtime.engine.timing import percentiles

STAGES = ("read", "preprocess", "infer", "postprocess", "total", "end_to_end", "queue", "processing")
# Prometheus histogram buckets for stage latencies, seconds (upper bounds; +Inf implied)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


class Histogram:
    """Cumulative-since-start bucket counts and sum (what a Prometheus ``_seconds`` histogram exports)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one = above every bound
        self.sum = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ...]`` ending with ``("+Inf", count)``."""
        out, run = [], 0
        for b, c in zip(self.bounds, self.counts):
            run += c
            out.append((f"{b:g}", run))
        out.append(("+Inf", self.count))
        return out


class StageStats:
    """Per-stage latency (ms): all-run percentiles + a resettable recent window."""

    def __init__(self, stages: Iterable[str] = STAGES, reservoir: int = 8192, window: int = 2048) -> None:
        self.all = {s: Reservoir(reservoir) for s in stages}
        self.recent = {s: Window(window) for s in stages}
        self.hist = {s: Histogram() for s in stages}  # seconds
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.all[stage].add(ms)
            self.recent[stage].add(ms)
            self.hist[stage].add(ms / 1e3)

    def histograms(self) -> dict[str, dict[str, object]]:
        """Per stage: ``{"buckets": [(le, count)...], "sum": seconds, "count": n}`` (a consistent copy)."""
        with self._lock:
            return {s: {"buckets": h.cumulative(), "sum": h.sum, "count": h.count} for s, h in self.hist.items() if h.count}

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


def recent_rate(times) -> float:
    """Events per second over a window of monotonic timestamps (e.g. the last 256 frames done)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
