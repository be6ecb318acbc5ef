"""Latency statistics (numpy only)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": float("nan"), "p90": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan")}
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "mean": float(a.mean())}


def time_calls(fn: Callable[[], object], iters: int, warmup: int = 3) -> list[float]:
    """Call ``fn`` ``warmup`` + ``iters`` times; return the timed calls in milliseconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out
