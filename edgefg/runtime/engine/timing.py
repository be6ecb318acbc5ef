"""Latency measurement, one way for every figure edgefg prints (numpy only).

``compress`` (its report's latency column), ``edgefg bench`` (and so ``tune``) and ``benchmarks/``
time models the same way: each model is warmed up, then timed in **interleaved rounds** — A, B, C,
A, B, C … — so background load and clock drift hit every model alike (timing one model after the
other on a busy machine once showed an INT8 model 3.5× *slower* than its FP32 source that is 2.4×
faster); the figures are medians/percentiles of all timed calls, with their spread (interquartile
range) reported beside them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

# runs one model ``n`` times and returns the ``n`` call times in ms (in this process, or in a worker)
RoundRunner = Callable[[int], list[float]]


def percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": float("nan"), "p90": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan")}
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "mean": float(a.mean())}


def latency_summary(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """:func:`percentiles` plus the spread of the calls: ``iqr`` (p75 − p25, ms)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    p25, p75 = np.percentile(a, [25, 75]) if a.size else (float("nan"), float("nan"))
    return {**percentiles(a), "iqr": float(p75 - p25)}


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


def interleaved_rounds(runners: Sequence[RoundRunner], rounds: int, iters: int) -> list[list[float]]:
    """``rounds`` rounds; in each, every runner times ``iters`` calls in turn. Per runner: all its call times (ms)."""
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, run in enumerate(runners):
            times[i] += run(iters)
    return times


def time_interleaved(fns: Sequence[Callable[[], object]], rounds: int, iters: int, warmup: int = 3) -> list[dict[str, float]]:
    """In-process: warm every ``fn`` up, then :func:`interleaved_rounds` (one untimed call before each
    model's turn, as after a switch caches are cold); one :func:`latency_summary` per ``fn``."""
    for fn in fns:
        time_calls(fn, 0, warmup=warmup)
    runners = [lambda n, fn=fn: time_calls(fn, n, warmup=1) for fn in fns]
    return [latency_summary(t) for t in interleaved_rounds(runners, rounds, iters)]


def split_calls(total: int, max_rounds: int = 5) -> tuple[int, int]:
    """(rounds, iters per round) for about ``total`` timed calls per model."""
    rounds = max(1, min(max_rounds, total))
    return rounds, max(1, math.ceil(total / rounds))
