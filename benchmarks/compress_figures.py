"""Real-data figures for ``edgefg compress`` (README "Compression" section).

    python benchmarks/compress_figures.py int8    # accuracy-aware INT8 on mobilenetv2_cub100
    python benchmarks/compress_figures.py prune   # 30% structured pruning + KD on mobilenetv2_cub100
    python benchmarks/compress_figures.py vit     # hybrid ViT on cub100: EViT/ToMe/CLCA/ILA/INT8
    python benchmarks/compress_figures.py vit-int8  # accuracy-aware INT8 of that ViT and its token-reduced variants (after ``vit``)
    python benchmarks/compress_figures.py effnet  # EfficientNet-Lite0 through the CLI (after ``cnn_recovery.py evaluate``)

``int8`` and ``prune`` run the edgefg CLI exactly as a user would (the command is printed and
stored) on ../shared/data (``EDGEFG_DATA``) and copy each report to results/compress/. ``vit``
(benchmarks/vit_hybrid_cub.py) trains a hybrid ViT on cub100 (no pretrained ViT is available here),
then measures token reduction, CLCA, ILA adapters and INT8 against the same model in one run. These
are small CPU-scale figures, far from the papers' settings (ImageNet-pretrained ViT-B/16, 224–448 px,
GPUs). Each figure also writes its result block (``compress-int8``, ``compress-prune``, ``compress-vit``).
"""
from __future__ import annotations

import argparse
import json
import sys

if not __package__:  # python benchmarks/compress_figures.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import COMPRESS_RESULTS as OUT
from benchmarks.common import COMPRESS_RUNS as RUNS
from benchmarks.common import DATA, MODEL, REPO, TEST, TRAIN, compress_summary, write_block, write_json
from benchmarks.common import EFFNET_MODEL as EFFNET
from benchmarks.common import RUNS as ALL_RUNS


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _mb(x: float) -> str:
    return f"{x:.2f}"


def render_int8(s: dict) -> str:
    r = s["report"]
    q = r["compression"][-1]
    w = q.get("worst_class") or {}
    lines = [f"`{s['command']}` (exit {s['exit_code']}, {s['seconds'] / 60:.1f} min wall time on a shared 2-core machine, waits for other jobs included); "
             f"calibration {r['calibration']['images']} stratified cub100/train images, validation {r['validation']['images']} cub100/test images:", "",
             "| step | size MB | params | top-1 | top-5 | worst class |", "|---|---|---|---|---|---|"]
    for row in r["steps"]:
        lines.append(f"| {row['step']} | {_mb(row['size_mb'])} | {row['params'] / 1e6:.2f} M | {_pct(row['top1'])} | {_pct(row['top5'])} | {_pct(row['worst_class_accuracy'])} |")
    float_names = [*q.get("float_layers_nncf", []), *q.get("float_layers_per_class", [])]
    floats = f"{len(float_names)}" + (f" ({', '.join(f'`{n}`' for n in float_names)})" if 0 < len(float_names) <= 8 else "")
    lines += ["", f"Top-1 drop {r['top1_drop']:.2f} pt (budget {q['budget'].get('max_drop')}; NNCF's own validation loop: {q['top1_drop']:+.2f} pt); "
              f"weighted layers left in float (no Q/DQ): {floats}; model type {q.get('model_type')}. Worst class: {w.get('class')} −{w.get('drop_pts', 0):.1f} pt = "
              f"{w.get('drop_images')} of {w.get('images')} images, sign-test p = {w.get('p_value', 1):.2g} "
              f"({'a real loss' if (w.get('p_value') or 1) < r.get('class_alpha', 0.05) else 'noise at this class size'}); "
              f"classes over the {q['budget'].get('max_class_drop')} pt per-class budget: {len(q.get('classes_over_budget', []))}. "
              "Speed of INT8 vs FP32 (plain INT8 recipe, same quantizer settings): the Pareto table.", ""]
    return "\n".join(lines)


def render_prune(s: dict) -> str:
    r = s["report"]
    p, d = r["compression"][0], r["compression"][1]
    lines = [f"`{s['command']}` (exit {s['exit_code']}, {s['seconds'] / 60:.1f} min wall time on a shared 2-core machine, waits for other jobs included). Pruning: {p['library']}, "
             f"{p['importance']} importance, {p['iterative_steps']} iterative steps, {p['scope']}; recovery: {d['epochs']} epoch(s) = {d['steps']} steps "
             f"of KD from the unpruned model (T = {d['temperature']:g}, alpha = {d['alpha']:g}, {d['optimizer']} {d['lr']:g}, {d['schedule']}):", "",
             "| step | params | MACs | size MB | top-1 | top-5 | worst class |", "|---|---|---|---|---|---|---|"]
    for row in r["steps"]:
        lines.append(f"| {row['step']} | {row['params'] / 1e6:.2f} M | {row['macs'] / 1e6:.1f} M | {_mb(row['size_mb'])} | {_pct(row['top1'])} | "
                     f"{_pct(row['top5'])} | {_pct(row['worst_class_accuracy'])} |")
    hist = ", ".join(f"{h['train_top1'] * 100:.0f} %" for h in d.get("history", []))
    lines += ["", f"Top-1 drop {r['top1_drop']:.2f} pt; worst class drop {r['worst_class_drop']:.1f} pt; training top-1 per epoch (augmented): {hist}. "
              "Latency and throughput of the pruned model next to FP32 and INT8, timed in one interleaved run: the Pareto table.", ""]
    return "\n".join(lines)


def render_effnet(s: dict) -> str:
    """The two user runs on EfficientNet-Lite0: each report's per-step table as `edgefg compress` writes it."""
    lines = []
    for run in s["runs"]:
        r = run["report"]
        lines += [f"`{run['command']}` (exit {run['exit_code']}, {run['seconds'] / 60:.1f} min on a shared 2-core machine); validation "
                  f"{r['validation']['images']} cub100/test images, latency = the report's own batch-1 timing ({r.get('latency_backend')}) while "
                  "other jobs ran (speed-ups timed on a quiet machine: the `cnn-recovery` table):", "",
                  "| step | MACs | params | latency | top-1 | top-5 | worst class |", "|---|---|---|---|---|---|---|"]
        for row in r["steps"]:
            lines.append(f"| {row['step']} | {row['macs'] / 1e6:.0f} M | {row['params'] / 1e6:.2f} M | "
                         f"{row['latency_ms_p50']:.2f} ms | {_pct(row['top1'])} | {_pct(row['top5'])} | {_pct(row['worst_class_accuracy'])} |")
        q = r["compression"][-1]
        floats = [*q.get("float_layers_nncf", []), *q.get("float_layers_per_class", [])]
        lines += ["", f"Top-1 drop {r['top1_drop']:.2f} pt; worst class drop {r['worst_class_drop']:.1f} pt; "
                  f"INT8 layers left in float: {len(floats)}" + (f" ({', '.join(f'`{n}`' for n in floats[:6])})" if floats else "") + ".", ""]
    return "\n".join(lines)


def render_vit(v: dict) -> str:
    t = v["train"]
    lines = [f"Setting: {v['setting']}; {t['epochs']} epochs ({t['steps']} steps, {t['minutes']} min), "
             f"{t['trainable_params'] / 1e6:.2f} M trainable parameters. Written by `python benchmarks/compress_figures.py vit`. "
             f"Latency: {v['latency']}.", "",
             "| variant | MACs | batch-1 latency (speed-up) | throughput (async) vs plain | top-1 | Δ top-1 | worst class: images lost, p (Bonferroni) | indexing ops | ORT / OpenVINO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in v["rows"]:
        ops = ", ".join(row.get("graph_indexing_ops", [])) or "–"
        rt = row.get("runtimes") or {}
        rts = f"{rt.get('onnxruntime', '–')} / {rt.get('openvino', '–')}" if rt else "–"
        worst = "–" if row is v["rows"][0] else f"{row['worst_class_drop_images']}, p={row['worst_class_p']:.2g} ({row['worst_class_p_adjusted']:.2g})"
        lines.append(f"| {row['variant']} | {row['macs'] / 1e6:.0f} M ({row['macs_ratio']:.2f}×) | {row['latency_ms_p50']:.2f} ms ({row['throughput_gain']:.2f}×) | "
                     f"{row['throughput_fps'] / v['rows'][0]['throughput_fps']:.2f}× | {_pct(row['top1'])} | {row['top1_change_pts']:+.2f} pt | "
                     f"{worst} | {ops} | {rts} |")
    ila = next((r for r in v["rows"] if r["variant"].startswith("ILA")), None)
    if ila and "train" in ila:
        tr = ila["train"]
        lines += ["", f"ILA: adapters after blocks {tr['blocks']} (token grid 14×14 → {tr['final_grid'][0]}×{tr['final_grid'][1]}), "
                  f"{tr['params_trainable']:,} trainable parameters = {100 * tr['trainable_fraction']:.1f} % of {tr['params_total'] / 1e6:.2f} M, {tr['steps']} steps."]
    return "\n".join(lines) + "\n"


def render_vit_int8(v: dict) -> str:
    from benchmarks.vit_int8_cub import render

    return render(v)


EFFNET_PRUNED = ALL_RUNS / "cnn-recovery" / "models" / "efficientnet_lite0.prune0.2"


def fig_effnet(args) -> None:
    """EfficientNet-Lite0 (benchmarks/cnn_recovery.py) through the CLI as a user runs it: 192 px input
    + INT8 in one run, and accuracy-aware INT8 of the 20 %-pruned model (plain INT8 lost points there)."""
    for d in (EFFNET, EFFNET_PRUNED):
        if not (d / "config.json").is_file():
            raise SystemExit(f"missing {d.relative_to(REPO)}: run `python benchmarks/cnn_recovery.py evaluate --weights ...` first")
    runs = [
        compress_summary([str(EFFNET), "--data", str(TRAIN), "--val-data", str(TEST), "--recipe", "int8", "--input-size", "192", "--epochs", "0",
                 "-o", str(RUNS / "effnet-192-int8"), "--force"], "effnet-192-int8"),
        compress_summary([str(EFFNET_PRUNED), "--data", str(TRAIN), "--val-data", str(TEST), "--max-drop", "0.5",
                 "-o", str(RUNS / "effnet-prune0.2-int8-acc"), "--force"], "effnet-prune0.2-int8-acc"),
    ]
    write_json(OUT / "effnet.json", {"runs": runs})
    for run in runs:
        print(f"{run['command']}: exit {run['exit_code']}, " + ", ".join(f"{r['step']} {r['top1']:.4f}" for r in run["report"]["steps"]))


BLOCKS = {"int8": ("compress-int8", "int8-accuracy.json", render_int8), "prune": ("compress-prune", "prune-kd.json", render_prune),
          "vit": ("compress-vit", "vit.json", render_vit), "effnet": ("compress-effnet", "effnet.json", render_effnet),
          "vit-int8": ("compress-vit-int8", "vit-int8-accuracy.json", render_vit_int8)}


def write_readme_blocks(figures: list[str]) -> None:
    """Render the result block of each figure in ``figures`` from its JSON in results/compress/."""
    for fig in figures:
        name, file, fn = BLOCKS[fig]
        if not (OUT / file).is_file():
            print(f"block '{name}': no results/compress/{file} yet (run the '{fig}' figure)")
            continue
        try:
            text = fn(json.loads((OUT / file).read_text(encoding="utf-8")))
        except (KeyError, TypeError, IndexError) as exc:
            print(f"block '{name}' left alone: results/compress/{file} is from an older version of this script ({exc!r}); re-run the '{fig}' figure")
            continue
        write_block(name, text)


def fig_int8(args) -> None:
    s = compress_summary(
        [str(MODEL), "--data", str(TRAIN), "--val-data", str(TEST), "--max-drop", "0.5", "--max-class-drop", str(args.class_budget),
         "-o", str(RUNS / "mnv2-int8-acc"), "--force"],
        "int8-accuracy",
    )
    r = s["report"]
    q = r["compression"][-1]
    print(f"exit {s['exit_code']}: top-1 {r['steps'][0]['top1']:.4f} → {r['steps'][-1]['top1']:.4f} (drop {q['top1_drop']:.2f} pt), "
          f"worst class {q['worst_class']}, float layers {len(q['float_layers_nncf']) + len(q['float_layers_per_class'])}")


def fig_vit_int8(args) -> None:
    """Accuracy-aware INT8 of the hybrid ViT and its token-reduced variants, through the CLI, on all of
    cub100/test (benchmarks/vit_int8_cub.py)."""
    from benchmarks.vit_int8_cub import run

    run(args)


def fig_prune(args) -> None:
    s = compress_summary(
        [str(MODEL), "--data", str(TRAIN), "--val-data", str(TEST), "--recipe", "fp32", "--prune", str(args.ratio), "--epochs", str(args.epochs),
         *(["--max-steps", str(args.max_steps)] if args.max_steps else []), "-o", str(RUNS / "mnv2-prune"), "--force"],
        "prune-kd",
    )
    for row in s["report"]["steps"]:
        print(f"{row['step']:<18} params {row['params']:>9,}  MACs {row['macs'] / 1e6:7.1f} M  latency {row['latency_ms_p50']:.2f} ms  top-1 {row['top1']:.4f}")


def fig_vit(args) -> None:
    from benchmarks.vit_hybrid_cub import run

    run(args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figure", choices=["int8", "prune", "vit", "vit-int8", "effnet", "all", "readme"], help="readme: only re-render the result blocks from results/compress/*.json")
    ap.add_argument("--class-budget", type=float, default=10.0, help="per-class budget for the int8 figure (points)")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--vit-epochs", type=int, default=8, help="vit: epochs for the hybrid ViT's transformer")
    ap.add_argument("--vit-smoke", action="store_true", help="vit: 3 steps per training, 300 test images (checks the script)")
    ap.add_argument("--rounds", type=int, default=5, help="vit, vit-int8: interleaved timing rounds")
    ap.add_argument("--val-size", type=int, default=None, help="vit-int8: a stratified subset of N test images (default: all 2,903)")
    ap.add_argument("--max-drop", type=float, default=0.5, help="vit-int8: --max-drop of each edgefg compress run (points)")
    ap.add_argument("--vit-variants", type=lambda s: [v.strip() for v in s.split(";") if v.strip()], default=None,
                    help="vit-int8: ';'-separated variant names from variants.json (default: plain ViT, EViT/ToMe keep 0.5/0.7, EViT keep 0.5 + 1 epoch KD)")
    ap.add_argument("--vit-smooth-quant", type=float, default=None, help="vit-int8: --smooth-quant alpha (default: NNCF's, 0.95; negative: off)")
    args = ap.parse_args()
    if not MODEL.is_dir():
        raise SystemExit(f"real data not found at {DATA} (set EDGEFG_DATA)")
    for name, fn in (("int8", fig_int8), ("prune", fig_prune), ("vit", fig_vit), ("vit-int8", fig_vit_int8), ("effnet", fig_effnet)):
        if args.figure in (name, "all"):
            fn(args)
    if not getattr(args, "vit_smoke", False):
        write_readme_blocks(list(BLOCKS) if args.figure in ("all", "readme") else [args.figure])
    return 0


if __name__ == "__main__":
    sys.exit(main())
