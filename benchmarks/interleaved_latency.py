"""Interleaved batch-1 latency of ONNX models (OpenVINO CPU, f32) — for comparing compress steps fairly.

    python benchmarks/interleaved_latency.py A.onnx B.onnx [--rounds 30 --iters 10]

Each round runs every model ``iters`` times in turn, so background load hits all models alike; prints the
median and the minimum of the per-round means and the speed-up of each model over the first.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    compiled = []
    for path in args.models:
        model = core.read_model(path)
        shape = [1] + [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
        compiled.append((path, core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}), shape))
    times = {p: [] for p, _, _ in compiled}
    xs = {p: np.random.default_rng(0).standard_normal(s).astype(np.float32) for p, _, s in compiled}
    for p, c, _ in compiled:
        for _ in range(5):
            c(xs[p])
    for _ in range(args.rounds):
        for p, c, _ in compiled:
            t = time.perf_counter()
            for _ in range(args.iters):
                c(xs[p])
            times[p].append((time.perf_counter() - t) / args.iters * 1e3)
    base = compiled[0][0]
    for p, _, _ in compiled:
        med, mn = float(np.median(times[p])), float(np.min(times[p]))
        print(f"{p}: median {med:.2f} ms (×{np.median(times[base]) / med:.2f}), min {mn:.2f} ms (×{np.min(times[base]) / mn:.2f})")


if __name__ == "__main__":
    main()
