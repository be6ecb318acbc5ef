"""The fastest export within tolerance (what ``yolo benchmark`` answers): mobilenetv2_cub100 as FP32 and
INT8 bundles for OpenVINO (intel-cpu) and ONNX Runtime (onnxruntime-cpu), timed side by side and scored on
cub100/test by one ``edgefg bench --data`` command.

    python benchmarks/fastest_within.py                  # all test images; writes results/fastest_within.json + the docs block
    python benchmarks/fastest_within.py --max-images 300 # quick check (no block written)

The INT8 artifact is NNCF post-training quantization on 300 cub100/train images (``--recipe int8``, no
accuracy budget), deployed unchanged to both runtimes. Latency is this host's CPU, not a device's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/fastest_within.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RESULTS, RUNS, TEST, TRAIN, machine_line, run_edgefg, shown, write_block, write_json

BLOCK = "fastest-within"
TARGETS = ("intel-cpu", "onnxruntime-cpu")


def bundles(work: Path) -> list[Path]:
    """FP32 and INT8 bundles for each host target, built once (kept under runs/ for a rerun)."""
    out = []
    for recipe in ("fp32", "int8"):
        art = work / f"art-{recipe}"
        if not (art / "manifest.json").is_file():
            run_edgefg("compress", MODEL, "--recipe", recipe, "--data", TRAIN, "--calib-size", 300, "--val-data", TEST, "--val-size", 100,
                       "--latency-iters", 2, "--no-plot", "-o", art, echo=True)
        for target in TARGETS:
            b = work / f"{recipe}-{target}"
            if not (b / "manifest.json").is_file():
                run_edgefg("deploy", art, "--target", target, "-o", b, echo=True)
            out.append(b)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-images", type=int, help="score only the first N test images (quick check; no block written)")
    ap.add_argument("--max-drop", type=float, default=1.0, help="top-1 points a bundle may lose against the FP32 OpenVINO one")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--report-only", action="store_true", help="re-render the block from results/fastest_within.json (no measurement)")
    args = ap.parse_args()
    if not MODEL.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    if args.report_only:
        saved = json.loads((RESULTS / "fastest_within.json").read_text(encoding="utf-8"))
        write_block(BLOCK, markdown(saved, saved.get("stdout", "")))
        return 0
    work = RUNS / "fastest-within"
    found = bundles(work)
    json_out = work / "bench.json"
    argv: list[Any] = ["bench", *found, "--rounds", args.rounds, "--iters", 50, "--data", TEST, "--max-drop", args.max_drop, "--json", json_out]
    if args.max_images:
        argv += ["--max-images", args.max_images]
    run = run_edgefg(*argv, echo=True)
    print(run.stdout)
    result = json.loads(json_out.read_text(encoding="utf-8"))
    result["command"] = "edgefg " + shown([a.relative_to(RUNS.parent) if isinstance(a, Path) and a.is_relative_to(RUNS.parent) else a for a in argv])
    result["machine_line"] = machine_line()
    result["stdout"] = run.stdout
    md = markdown(result, run.stdout)
    print(md)
    if not args.max_images:
        write_json(RESULTS / "fastest_within.json", result)
        write_block(BLOCK, md)
    return 0


def markdown(r: dict[str, Any], stdout: str) -> str:
    acc = r["accuracy"]
    rows = []
    best = (r.get("fastest_within") or {}).get("bundle")
    base = r["results"][0]["latency_ms"]["p50"]
    for x in r["results"]:
        name = Path(x["bundle"]).name
        worst = "–" if x.get("worst_class_drop") is None else f"{x['worst_class_drop']:.1f}"
        rows.append(f"| {'**' + name + '**' if x['bundle'] == best else name} | {x['backend']} | {x['precision']} | {100 * x['top1']:.2f} % | "
                    f"{0.0 - x['top1_drop_pts']:+.2f} | {worst} | {x.get('classes_significantly_worse', 0)} | {'yes' if x['within'] else 'no'} | {x['latency_ms']['p50']:.2f} | "
                    f"{x['latency_ms']['iqr']:.2f} | {base / x['latency_ms']['p50']:.2f}× | {x['size_mb']:.2f} |")
    line = next((ln for ln in stdout.splitlines() if ln.startswith(("Fastest within", "No bundle"))), "")
    return (
        f"Written by `python benchmarks/fastest_within.py` on {r['machine_line']}; the command it ran:\n`{r['command']}`\n"
        f"(top-1 on {acc['images']} cub100/test images, latency batch 1 over {r['settings']['rounds']} interleaved rounds of "
        f"{r['settings']['iters']}; the first bundle is the reference).\n\n"
        "| bundle | backend | precision | top-1 | Δ pt | worst class Δ pt | classes sig. worse | within | p50 ms | IQR ms | vs first | size MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + (f"> {line}\n" if line else "")
    )


if __name__ == "__main__":
    sys.exit(main())
