"""``edgefg bench``: bundles side by side in one run.

Each bundle runs in its own worker process (so its peak RSS is its own); the parent interleaves
rounds — bundle A, B, C, A, B, C … — with the one timing helper of :mod:`edgefg.runtime.engine.timing`, so
machine drift hits every bundle alike. numpy only.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import EdgefgError
from edgefg.runtime.engine.timing import RoundRunner, interleaved_rounds, latency_summary, time_calls


@dataclass
class BenchOptions:
    rounds: int = 5
    iters: int = 50
    warmup: int = 10
    batch: int = 1
    num_threads: int | None = None
    backend: str | None = None  # run every bundle with this backend instead of its manifest's
    trust: tuple[str, ...] | None = None  # public key paths; every bundle must be signed by one


def _input_for(manifest, batch: int) -> np.ndarray:
    spec = manifest.inputs[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
    rng = np.random.default_rng(0)
    if spec.dtype in ("uint8", "int8"):
        info = np.iinfo(spec.dtype)
        return rng.integers(info.min, info.max + 1, size=shape, dtype=spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


def _worker(conn, bundle: str, opts: BenchOptions, backend: str | None) -> None:
    try:
        from edgefg.runtime.engine.bundle import LoadedBundle

        model = LoadedBundle(bundle, backend=backend, num_threads=opts.num_threads, trust=opts.trust or None)
        x = _input_for(model.manifest, opts.batch)
        time_calls(lambda: model.scores(x), opts.warmup, warmup=0)
        conn.send(("ready", {"backend": model.manifest.backend, "precision": model.manifest.precision, "target": model.manifest.target,
                             "threads": model.backend.num_threads}))
        while True:
            cmd, arg = conn.recv()
            if cmd == "round":
                conn.send(("times", time_calls(lambda: model.scores(x), arg, warmup=1)))
            else:
                conn.send(("rss", peak_rss_mb()))
                return
    except EdgefgError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # report, don't hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM (reset at exec, unlike ru_maxrss, which a
    spawned worker would inherit from its parent); elsewhere ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 * 1024.0 if platform.system() == "Darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["flags"] = [f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "neon", "asimd"}]
    except OSError:
        info["cpu"] = platform.processor()
    from edgefg.versions import library_versions

    info["versions"] = library_versions(("edgefg", "onnxruntime", "openvino", "ai-edge-litert", "numpy"))
    return info


def _dir_size_mb(path: Path, manifest) -> float:
    return sum((path / f).stat().st_size for f in manifest.files if not f.startswith("parity_samples")) / 1e6


def run_bench(bundles: list[Path], opts: BenchOptions, backends: list[str | None] | None = None) -> dict[str, Any]:
    """Bench ``bundles`` side by side; ``backends`` optionally overrides the backend per bundle."""
    from edgefg.manifest import load_manifest

    backends = backends or [opts.backend] * len(bundles)
    manifests = [load_manifest(b, trust=opts.trust or None) for b in bundles]  # fail fast, with a clear error, before spawning
    ctx = mp.get_context("spawn")
    workers: list[tuple[Any, Any]] = []
    try:
        for b in bundles:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, str(b), opts, backends[len(workers)]), daemon=True)
            proc.start()
            workers.append((proc, parent))
        infos = []
        for (_proc, conn), b in zip(workers, bundles):
            kind, payload = conn.recv()
            if kind == "error":
                raise EdgefgError(f"bench worker for '{b}' failed: {payload}")
            infos.append(payload)
        def runner(i: int, conn) -> RoundRunner:
            def run(n: int) -> list[float]:
                conn.send(("round", n))
                kind, payload = conn.recv()
                if kind == "error":
                    raise EdgefgError(f"bench worker for '{bundles[i]}' failed: {payload}")
                return payload

            return run

        times = interleaved_rounds([runner(i, conn) for i, (_, conn) in enumerate(workers)], opts.rounds, opts.iters)
        results = []
        for i, (b, (_proc, conn)) in enumerate(zip(bundles, workers)):
            conn.send(("stop", None))
            _, rss = conn.recv()
            lat = latency_summary(times[i])
            results.append(
                {
                    "bundle": str(b),
                    **infos[i],
                    "batch": opts.batch,
                    "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "mean", "iqr")},
                    "throughput_fps": opts.batch * 1e3 / lat["mean"],
                    "peak_rss_mb": rss,
                    "size_mb": _dir_size_mb(b, manifests[i]),
                    "samples": len(times[i]),
                }
            )
    finally:
        for proc, _ in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    return {
        "machine": machine_info(),
        "settings": {"rounds": opts.rounds, "iters": opts.iters, "warmup": opts.warmup, "batch": opts.batch, "threads": opts.num_threads},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }


def bench_table(result: dict[str, Any]):
    """The side-by-side table; with accuracy joined in (``bench --data``), top-1, its drop vs the first
    bundle and whether it is within the tolerance, the fastest of those marked."""
    from rich.table import Table

    m = result["machine"]
    acc = result.get("accuracy")
    title = f"edgefg bench — {m.get('cpu', '?')}, {m.get('cores')} cores, batch {result['settings']['batch']}"
    if acc:
        title += f"; top-1 on {acc['images']} images of {Path(acc['data']).name}, tolerance {acc['max_drop_pts']:g} pt"
    table = Table(title=title)
    cols = ["bundle", "backend", "precision"] + (["top-1 %", "Δ pt", "worst class Δ pt", "classes sig. worse", "within"] if acc else [])
    cols += ["p50 ms"] + ([] if acc else ["p90 ms", "p99 ms"]) + ["IQR ms", "FPS", "vs first", "peak RSS MB", "size MB"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("bundle", "backend", "precision", "within") else "right", no_wrap=col == "bundle")
    base = result["results"][0]["latency_ms"]["p50"] if result["results"] else 1.0
    best = (result.get("fastest_within") or {}).get("bundle")
    for r in result["results"]:
        lat = r["latency_ms"]
        cells = [Path(r["bundle"]).name, r["backend"], r["precision"]]
        if acc:
            cells += [_num(r.get("top1"), 100.0), _num(r.get("top1_drop_pts")), _num(r.get("worst_class_drop")),
                      str(r.get("classes_significantly_worse", 0)), ("yes, fastest" if r["bundle"] == best else "yes") if r.get("within") else "no"]
        cells += [f"{lat['p50']:.2f}"] + ([] if acc else [f"{lat['p90']:.2f}", f"{lat['p99']:.2f}"]) + [f"{lat.get('iqr', float('nan')):.2f}",
                  f"{r['throughput_fps']:.1f}", f"{base / lat['p50']:.2f}×", f"{r['peak_rss_mb']:.0f}", f"{r['size_mb']:.2f}"]
        table.add_row(*cells)
    return table


def _num(v: float | None, scale: float = 1.0) -> str:
    return "–" if v is None else f"{scale * v + 0.0:.2f}"  # + 0.0: no "-0.00"
