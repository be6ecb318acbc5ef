"""The README's results table, measured: FP32 vs INT8 per target on real fine-grained data.

    make results            # = python benchmarks/results.py

mobilenetv2_cub100 (../shared/data/models) compressed with cub100/train (300 stratified calibration
images) and validated on cub100/test (2,903 images); every bundle is validated against the FP32
artifact and all bundles are benchmarked in ONE interleaved run (same threads), so ratios are
comparable. Writes results/results.json, results/results.md and the result block between the
``results:start``/``results:end`` markers. Targets whose engine cannot run here (TensorRT) are run
with a stand-in backend on this host, and the table says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if not __package__:  # python benchmarks/results.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, TEST, TRAIN, machine_info, write_block, write_json
from benchmarks.common import RESULTS as OUT

# (target, artifact recipe, precision, backend used here or None for the bundle's own, note)
ROWS = [
    ("onnxruntime-cpu", "fp32", "fp32", None, ""),
    ("onnxruntime-cpu", "int8", "int8", None, ""),
    ("intel-cpu", "fp32", "fp32", None, "OpenVINO, f32 inference precision forced"),
    ("intel-cpu", "int8", "int8", None, ""),
    ("rpi5", "fp32", "fp32", None, "LiteRT/XNNPACK on this x86 CPU as a stand-in for the Pi"),
    ("rpi5", "fp32", "int8", None, "LiteRT/XNNPACK on this x86 CPU as a stand-in for the Pi"),
    ("jetson-orin-nano", "int8", "int8", "onnxruntime", "Q/DQ ONNX the engine is built from, run in ONNX Runtime as a stand-in (no TensorRT here)"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-size", type=int, default=300)
    ap.add_argument("--max-images", type=int, default=None, help="validate on the first N test images only (quick check)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the result block")
    args = ap.parse_args()
    os.environ.setdefault("EDGEFG_QUIET", "1")

    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.errors import EdgefgError
    from edgefg.models.loader import load_model
    from edgefg.runtime.bench import BenchOptions, run_bench
    from edgefg.validate.api import validate

    model_dir, train, test = MODEL, TRAIN, TEST
    if not model_dir.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = load_model(model_dir)
    artifacts, timings = {}, {}
    for recipe in ("fp32", "int8"):
        t = time.perf_counter()
        opts = CompressOptions(recipe=recipe, data=train, val_data=test, calib_size=args.calib_size, force=True, latency_iters=5)
        artifacts[recipe] = compress(model, work / f"artifact-{recipe}", opts).directory
        timings[f"compress_{recipe}_s"] = time.perf_counter() - t

    rows, bundles = [], []
    for target, recipe, precision, backend, note in ROWS:
        row = {"target": target, "precision": precision, "backend_here": backend, "note": note}
        t = time.perf_counter()
        try:
            res = deploy(artifacts[recipe], target, work / f"bundle-{target}-{precision}", precision=precision, force=True, data=train)
            row["deploy_s"] = time.perf_counter() - t
            row["bundle"] = str(res.directory)
            row["backend"] = backend or res.manifest.backend
            v = validate(res.directory, test, reference=artifacts["fp32"], max_images=args.max_images, backend=backend)
            worst = v["class_drops"][0] if v.get("class_drops") else {}
            row.update({k: v[k] for k in ("images", "top1", "top5", "reference_top1", "top1_drop", "worst_class_drop", "agreement", "mean_kl")})
            row["worst_class"] = {k: worst.get(k) for k in ("class", "images", "drop_images", "p_value")}
            bundles.append((res.directory, backend, row))
        except EdgefgError as exc:
            row["error"] = str(exc)
        rows.append(row)
        print(f"{target} {precision}: " + (f"top-1 {row['top1']:.4f}" if "top1" in row else f"not available: {row['error']}"), file=sys.stderr)

    bench = run_bench([b for b, _, _ in bundles], BenchOptions(rounds=args.rounds, iters=args.iters, warmup=10), [be for _, be, _ in bundles])
    for (_bundle, _, row), r in zip(bundles, bench["results"]):
        row.update({"p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"], "size_mb": r["size_mb"], "peak_rss_mb": r["peak_rss_mb"]})
    for row in rows:  # INT8/FP32 speed ratio within the same target, same run
        fp32 = next((r for r in rows if r["target"] == row["target"] and r["precision"] == "fp32" and "p50_ms" in r), None)
        if fp32 and "p50_ms" in row:
            row["speedup_vs_fp32"] = fp32["p50_ms"] / row["p50_ms"]

    result = {
        "command": "python benchmarks/results.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "model": str(model_dir.relative_to(DATA.parent) if DATA.parent in model_dir.parents else model_dir),
        "calibration": f"cub100/train, {args.calib_size} images stratified over 100 classes",
        "validation": f"cub100/test{'' if not args.max_images else f' (first {args.max_images})'}",
        "bench": {"rounds": args.rounds, "iters": args.iters, "batch": 1, "threads": bench["results"][0]["threads"] if bench["results"] else None},
        "timings": {**timings, "total_s": time.perf_counter() - t0},
        "rows": rows,
    }
    write_json(OUT / "results.json", result)
    md = render(result)
    (OUT / "results.md").write_text(md)
    print(md)
    if not args.no_readme:
        write_block("results", md)
    return 0


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Measured by `{result['command'].strip()}` on {m.get('cpu', '?')} ({m.get('cores')} cores; {', '.join(m.get('flags', []))}), "
        f"{result['bench']['threads']} inference threads, batch 1, {result['bench']['rounds']}×{result['bench']['iters']} interleaved timed runs per bundle. "
        f"Model `mobilenetv2_cub100`; calibration {result['calibration']}; validation {result['validation']}, against the FP32 artifact.",
        "",
        "| target | runs here on | precision | size MB | top-1 | top-5 | top-1 drop (pts) | worst-class drop (pts, images) | agreement | p50 ms | vs FP32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['target']} | – | {r['precision']} | not available: {r['error'][:90]} | | | | | | | |")
            continue
        wc = r["worst_class"]
        worst = f"{r['worst_class_drop']:.1f} ({wc.get('drop_images', 0)} of {wc.get('images', '?')}, p={wc['p_value']:.2f})" if wc.get("p_value") is not None else f"{r['worst_class_drop']:.1f}"
        where = r["backend"] + (" (stand-in)" if r.get("backend_here") or r["target"].startswith("rpi") else "")
        speed = f"{r['speedup_vs_fp32']:.2f}×" if "speedup_vs_fp32" in r else "– (no FP32 row)"
        lines.append(
            f"| {r['target']} | {where} | {r['precision']} | {r.get('size_mb', float('nan')):.2f} | {r['top1']:.4f} | {r['top5']:.4f} | "
            f"{r['top1_drop']:+.2f} | {worst} | {r['agreement']:.4f} | {r.get('p50_ms', float('nan')):.2f} | {speed} |"
        )
    notes = {}
    for r in result["rows"]:
        if r.get("note") and "error" not in r:
            notes.setdefault(r["target"], r["note"])
    notes = [f"{t}: {n}" for t, n in notes.items()]
    t = result["timings"]
    lines += ["", "- vs FP32: p50 latency of the FP32 bundle of the same target ÷ this bundle's, from the same interleaved run.", *[f"- {n}" for n in notes], f"- Wall time: compress fp32 {t['compress_fp32_s']:.0f} s, int8 {t['compress_int8_s']:.0f} s (incl. ONNX export); whole script {t['total_s']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
