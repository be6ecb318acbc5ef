"""The on-device loop: capture → preprocess → infer → postprocess → report (JSON lines)."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgefg.runtime.model import LoadedBundle
from edgefg.runtime.postprocess import to_probabilities, topk
from edgefg.runtime.sources import Source, open_source
from edgefg.runtime.timing import percentiles


@dataclass
class RunOptions:
    max_frames: int | None = None
    output: Path | None = None  # JSON lines file; None = stdout
    topk: int = 3
    num_threads: int | None = None


def stream(bundle: str | Path | LoadedBundle, source: str | Source, opts: RunOptions | None = None) -> Iterator[dict[str, Any]]:
    """Yield one result dict per frame: ``for result in stream(bundle, source): ...``."""
    opts = opts or RunOptions()
    model = bundle if isinstance(bundle, LoadedBundle) else LoadedBundle(bundle, num_threads=opts.num_threads)
    src = source if isinstance(source, Source) else open_source(source)
    labels, activation = model.labels, model.manifest.output_activation
    count = 0
    try:
        for frame in src:
            if opts.max_frames is not None and count >= opts.max_frames:
                break
            if frame.image is None:
                continue
            t0 = time.perf_counter()
            x = model.prepare(frame.image)[None]
            t1 = time.perf_counter()
            scores = model.scores(x)
            t2 = time.perf_counter()
            probs = to_probabilities(scores, activation)[0]
            top = topk(probs[None], opts.topk)[0]
            t3 = time.perf_counter()
            count += 1
            yield {
                "frame": frame.index,
                "timestamp": round(frame.timestamp, 6),
                "source": frame.name,
                "top": [{"label": labels[i], "score": round(float(probs[i]), 6)} for i in top],
                "latency_ms": {
                    "preprocess": round((t1 - t0) * 1e3, 3),
                    "infer": round((t2 - t1) * 1e3, 3),
                    "postprocess": round((t3 - t2) * 1e3, 3),
                    "total": round((t3 - t0) * 1e3, 3),
                },
            }
    finally:
        src.close()
        if not isinstance(bundle, LoadedBundle):
            model.close()


def run_pipeline(bundle: str | Path, source: str, opts: RunOptions) -> dict[str, Any]:
    """Run until the source ends or ``max_frames``; write JSON lines; return the summary."""
    model = LoadedBundle(bundle, num_threads=opts.num_threads)
    src = open_source(source)
    out = open(opts.output, "w", encoding="utf-8") if opts.output else sys.stdout
    latencies: list[float] = []
    start = time.perf_counter()
    try:
        for result in stream(model, src, opts):
            out.write(json.dumps(result) + "\n")
            out.flush()
            latencies.append(result["latency_ms"]["total"])
    finally:
        seconds = time.perf_counter() - start
        if out is not sys.stdout:
            out.close()
        model.close()
    return {
        "frames": len(latencies),
        "seconds": seconds,
        "fps": len(latencies) / seconds if seconds > 0 else 0.0,
        "latency_ms": percentiles(latencies) if latencies else percentiles(np.zeros(0)),
        "skipped": src.skipped,
    }
