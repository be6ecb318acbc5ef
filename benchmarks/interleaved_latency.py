"""Interleaved batch-1 latency of ONNX models (OpenVINO CPU, f32) — for comparing compress steps fairly.

    python benchmarks/interleaved_latency.py A.onnx B.onnx [--rounds 30 --iters 10]

Times the models with edgefg's one timing helper (:func:`edgefg.runtime.engine.timing.time_interleaved`, also
used by the compress report and ``edgefg bench``): warm-up, then each round runs every model ``iters``
times in turn, so background load hits all models alike; prints the median, the spread (IQR) and the
speed-up of each model's median over the first's.
"""
from __future__ import annotations

import argparse

import numpy as np

from edgefg.runtime.engine.timing import time_interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import openvino as ov

    core = ov.Core()
    calls = []
    for path in args.models:
        model = core.read_model(path)
        shape = [1] + [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads})
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        calls.append(lambda c=compiled, x=x: c(x))
    lats = time_interleaved(calls, args.rounds, args.iters, warmup=5)
    base = lats[0]["p50"]
    for path, lat in zip(args.models, lats):
        print(f"{path}: median {lat['p50']:.2f} ms (×{base / lat['p50']:.2f}), IQR {lat['iqr']:.2f} ms, p90 {lat['p90']:.2f} ms")


if __name__ == "__main__":
    main()
