"""Accuracy-aware INT8 of the hybrid ViT and its token-reduced variants, on all of cub100/test.

Run through ``python benchmarks/compress_figures.py vit-int8`` after the ``vit`` figure (which writes
runs/compress/vit-hybrid/variants/*.onnx and variants.json). For each variant (plain ViT, EViT/ToMe
keep 0.7/0.5, EViT keep 0.5 + 1 epoch KD; ``--vit-variants`` picks others):

1. ``edgefg compress VARIANT.onnx --max-drop 0.5 --max-class-drop 10`` exactly as a user runs it (the
   command is stored): NNCF's accuracy control (transformer model type, picked from the graph) on the
   validation images — all 2,903 cub100/test images unless ``--val-size`` asks for a stratified subset;
2. plain INT8 of the same file with the same quantizer settings and calibration images (no accuracy
   control), so the table shows what the control bought (the CLI report's ``plain_int8_top1`` is NNCF's
   own starting model: the two are compared as a check);
3. FP32, plain INT8 and accuracy-aware INT8 scored with OpenVINO on the same images (scores cached by
   file sha256, shared with ``benchmarks/pareto.py``): top-1, drop, the worst class's paired sign-test p,
   Bonferroni-adjusted for the classes compared;
4. batch-1 latency of the three (and of the plain ViT's FP32, for the combined speed-up) timed in one
   interleaved loop with ``edgefg.runtime.engine.timing`` per variant.

Each variant's row is written to the JSON as soon as it is done (a run stopped half-way keeps its
finished rows; a re-run reuses a variant's CLI result when the command and the ONNX file are unchanged).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/vit_int8_cub.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import COMPRESS_RESULTS as OUT
from benchmarks.common import COMPRESS_RUNS as RUNS
from benchmarks.common import MODEL, REPO, TEST, TRAIN, compress_summary, write_json

DEFAULT_VARIANTS = ("plain ViT", "EViT keep 0.5", "ToMe keep 0.5", "EViT keep 0.7", "ToMe keep 0.7", "EViT keep 0.5, 1 epoch KD")
# plain INT8 files the 'vit' figure already made with the same quantizer settings and calibration images
PLAIN_FROM_VIT_FIGURE = {"plain ViT": "INT8 (NNCF transformer, SmoothQuant default)", "EViT keep 0.5": "EViT keep 0.5 + INT8",
                         "ToMe keep 0.5": "ToMe keep 0.5 + INT8"}
TARGET_DROP, TARGET_SPEEDUP = 0.5, 1.5  # the goal (#17 item 4)
RESULT = "vit-int8-accuracy.json"


def slug(name: str) -> str:
    """A file-name form of a variant name: ``EViT keep 0.5, 1 epoch KD`` → ``evit-keep-0-5-1-epoch-kd``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def pick_variants(available: dict[str, str], wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """(variants to run, in the order asked; names asked for but not exported by the ``vit`` figure)."""
    asked = list(wanted) if wanted else list(DEFAULT_VARIANTS)
    return [v for v in asked if v in available], [v for v in asked if v not in available]


def float_summary(q: dict[str, Any], plain_float: list[str]) -> dict[str, Any]:
    """The int8 step's layers in float, split into what NNCF's transformer preset never quantizes (also
    float in plain INT8) and what the accuracy control (or the per-class loop) reverted, with module names."""
    mods = q.get("float_layer_modules") or {}
    final = [*q.get("float_layers_nncf", []), *q.get("float_layers_per_class", [])]
    reverted = [n for n in final if n not in set(plain_float)]
    return {
        "float_layers": final,
        "float_in_plain_int8": [n for n in final if n in set(plain_float)],
        "reverted": reverted,
        "reverted_modules": [mods.get(n, "?") for n in reverted],
        "float_layer_modules": {n: mods[n] for n in final if n in mods},
    }


def meets(row: dict[str, Any]) -> bool:
    return row["int8_acc"]["top1_drop_pts"] <= TARGET_DROP + 1e-9 and row["int8_acc"]["speedup"] >= TARGET_SPEEDUP


def _scores(summary: dict[str, Any], lat: dict[str, Any], fp32_lat: float, plain_vit_lat: float) -> dict[str, Any]:
    return {
        "top1": summary["top1"], "top1_drop_pts": -summary["top1_change_pts"], "top5": summary["top5"],
        "worst_class": summary["worst_class"], "worst_class_drop_images": summary["worst_class_drop_images"],
        "worst_class_p": summary["worst_class_p"], "worst_class_p_adjusted": summary["worst_class_p_adjusted"],
        "classes_significant_drop": summary["classes_significant_drop"], "classes_compared": summary["classes_compared"],
        "latency_ms_p50": lat["latency_ms_p50"], "latency_ms_iqr": lat["latency_ms_iqr"], "throughput_fps": lat["throughput_fps"],
        "speedup": fp32_lat / lat["latency_ms_p50"], "speedup_vs_plain_vit_fp32": plain_vit_lat / lat["latency_ms_p50"],
    }


def _cached_cli(f: Path, command_args: list[str], src_sha: str, out_dir: Path):
    """The stored CLI summary of this variant when it ran with the same command on the same file."""
    if not (f.is_file() and (out_dir / "model.onnx").is_file()):
        return None
    s = json.loads(f.read_text(encoding="utf-8"))
    return s if s.get("args") == command_args and s.get("source_sha256") == src_sha else None


def run(args) -> dict[str, Any]:
    import numpy as np
    import onnx

    from benchmarks.pareto import THREADS, score_onnx, time_interleaved
    from edgefg.calibration.dataset import iter_batches, scan, stratified_subset
    from edgefg.compress.quantize import QuantOptions, float_layers, quantize_onnx
    from edgefg.manifest import sha256_file
    from edgefg.models.loader import load_model

    t_start = time.time()
    smoke = bool(getattr(args, "vit_smoke", False))
    folder = RUNS / ("vit-hybrid-smoke" if smoke else "vit-hybrid")
    if not (folder / "variants.json").is_file():
        raise SystemExit(f"missing {folder / 'variants.json'}: run the 'vit' figure first{' with --vit-smoke' if smoke else ''}")
    available = json.loads((folder / "variants.json").read_text(encoding="utf-8"))
    names, missing = pick_variants(available, args.vit_variants)
    if missing:
        print(f"not exported by the 'vit' figure (skipped): {', '.join(missing)}")
    if "plain ViT" not in available:
        raise SystemExit("variants.json has no 'plain ViT'")
    val_size = args.val_size if args.val_size else (300 if smoke else None)
    teacher = load_model(MODEL)  # the ViT's labels and preprocessing are mobilenetv2_cub100's (variants/config.json)
    labels, spec = teacher.labels, teacher.preprocess
    work = RUNS / ("vit-int8-smoke" if smoke else "vit-int8")
    work.mkdir(parents=True, exist_ok=True)
    calib_samples = stratified_subset(scan(TRAIN, labels).samples, 300, 0)  # what the CLI calibrates on (--calib-size 300, seed 0)
    calib: list = []  # decoded when first needed

    def calibration():
        if not calib:
            calib.append(np.concatenate([b.x for b in iter_batches(calib_samples, spec, 64)]))
        return calib[0]
    sq = getattr(args, "vit_smooth_quant", None)
    qopts = QuantOptions(transformer=True, smooth_quant=sq)
    plain_vit = REPO / available["plain ViT"]
    out_file = (work if smoke else OUT) / RESULT
    cli_root = work / "results" if smoke else OUT  # each CLI run's summary, log and report: results/compress/vit-int8/
    result: dict[str, Any] = {
        "setting": "hybrid ViT and its token-reduced variants from the 'vit' figure (runs/compress/vit-hybrid, results/compress/vit.json)",
        "target": {"max_drop_pts": TARGET_DROP, "min_speedup": TARGET_SPEEDUP},
        "max_drop": args.max_drop, "max_class_drop": args.class_budget, "smooth_quant": sq,
        "validation": {"data": "cub100/test", "images": None, "subset": val_size},
        "calibration": {"data": "cub100/train", "images": len(calib_samples), "stratified": True, "seed": 0},
        "not_exported": missing, "planned": names, "rows": [],
    }

    for name in names:
        src = REPO / available[name]
        key = slug(name)
        out_dir = work / key
        cli_args = [str(src), "--data", str(TRAIN), "--val-data", str(TEST), *(["--val-size", str(val_size)] if val_size else []),
                    "--max-drop", str(args.max_drop), "--max-class-drop", str(args.class_budget), *(["--smooth-quant", str(sq)] if sq is not None else []),
                    "-o", str(out_dir), "--force"]
        src_sha = sha256_file(src)
        s = _cached_cli(cli_root / "vit-int8" / f"{key}.json", cli_args, src_sha, out_dir)
        if s is None:
            s = compress_summary(cli_args, f"vit-int8/{key}", extra={"args": cli_args, "source_sha256": src_sha}, out=cli_root)
        else:
            print(f"{name}: reusing the CLI result of {s['seconds'] / 60:.1f} min (same command, same ONNX file)", flush=True)
        rep = s["report"]
        q = rep["compression"][-1]

        t1 = time.time()
        made = PLAIN_FROM_VIT_FIGURE.get(name) if sq is None else None
        if made in available:
            plain_file, plain_by, quantize_seconds = REPO / available[made], f"the 'vit' figure ({made})", None
        else:
            plain_file, plain_by = work / f"{key}-plain-int8.onnx", "this figure"
            stamp = {"source_sha256": src_sha, "smooth_quant": sq}
            side = plain_file.with_suffix(".json")
            done = json.loads(side.read_text()) if side.is_file() and plain_file.is_file() else {}
            if {k: done.get(k) for k in stamp} == stamp:
                quantize_seconds = done.get("seconds")
            else:
                quantize_seconds = quantize_onnx(src, plain_file, calibration(), options=qopts)["seconds"]
                side.write_text(json.dumps({**stamp, "seconds": quantize_seconds}))
        plain_seconds = time.time() - t1

        t2 = time.time()
        ref = score_onnx(src, TEST, labels, spec, val_size)
        m_plain = score_onnx(plain_file, TEST, labels, spec, val_size).summary(ref)
        m_acc = score_onnx(out_dir / "model.onnx", TEST, labels, spec, val_size).summary(ref)
        m_ref = ref.summary(ref)
        score_seconds = time.time() - t2

        t3 = time.time()
        files = {"fp32": src, "int8_plain": plain_file, "int8_acc": out_dir / "model.onnx"}
        if name != "plain ViT":
            files["plain ViT fp32"] = plain_vit
        lat = time_interleaved(files, spec.input_size, rounds=args.rounds, tput_seconds=0.5)
        time_seconds = time.time() - t3
        fp32_ms = lat["fp32"]["latency_ms_p50"]
        vit_ms = lat.get("plain ViT fp32", lat["fp32"])["latency_ms_p50"]
        row = {
            "variant": name, "onnx": available[name], "command": s["command"], "exit_code": s["exit_code"],
            "fp32": {"top1": m_ref["top1"], "top5": m_ref["top5"], "latency_ms_p50": fp32_ms, "latency_ms_iqr": lat["fp32"]["latency_ms_iqr"],
                     "throughput_fps": lat["fp32"]["throughput_fps"], "speedup_vs_plain_vit_fp32": vit_ms / fp32_ms},
            "int8_plain": {**_scores(m_plain, lat["int8_plain"], fp32_ms, vit_ms), "onnx": str(plain_file.relative_to(REPO)),
                           "float_layers": float_layers(onnx.load(str(plain_file))), "quantized_by": plain_by, "quantize_seconds": quantize_seconds},
            "int8_acc": {**_scores(m_acc, lat["int8_acc"], fp32_ms, vit_ms), "onnx": str((out_dir / "model.onnx").relative_to(REPO)),
                         **float_summary(q, float_layers(onnx.load(str(plain_file)))), "passed": bool(rep.get("passed")),
                         "nncf_top1_drop": q.get("top1_drop"), "cli_top1_drop": rep.get("top1_drop"),
                         "cli_plain_int8_top1_drop": q.get("plain_int8_top1_drop"), "quantize_nodes": q.get("quantize_nodes"),
                         "control_seconds": q.get("seconds")},
            "latency": lat["_method"],
            "seconds": {"cli": s["seconds"], "plain_int8": round(plain_seconds, 1), "scoring": round(score_seconds, 1),
                        "timing": round(time_seconds, 1), "variant_total": round(s["seconds"] + time.time() - t1, 1)},  # a reused CLI run counts its own time
        }
        row["meets_target"] = meets(row)
        result["validation"]["images"] = int(len(ref.labels))
        result["rows"].append(row)
        result["seconds_total"] = round(time.time() - t_start, 1)
        result["threads"] = THREADS
        out_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(out_file, result)  # after every variant
        listing = {f"{r['variant']} + INT8 (accuracy-aware)": r["int8_acc"]["onnx"] for r in result["rows"]}
        write_json(work / "variants.json", listing, indent=1)  # for benchmarks/pareto.py
        a, p = row["int8_acc"], row["int8_plain"]
        print(f"{name:<28} FP32 {100 * row['fp32']['top1']:.2f} %  plain INT8 {_fmt_drop(p['top1_drop_pts'])} ×{p['speedup']:.2f}  "
              f"acc-aware INT8 {_fmt_drop(a['top1_drop_pts'])} ×{a['speedup']:.2f}  reverted {a['reverted_modules'] or 'none'}  "
              f"({row['seconds']['variant_total'] / 60:.1f} min)", flush=True)
    return result


def _fmt_drop(x: float) -> str:
    return f"{-x:+.2f} pt"


def render(v: dict[str, Any]) -> str:
    """The result block ``compress-vit-int8`` from the JSON written by :func:`run`."""
    val = v["validation"]
    images = f"all {val['images']:,} cub100/test images" if not val.get("subset") else f"a stratified {val['images']:,} of the cub100/test images"
    lines = [
        f"Each variant's exported ONNX through `edgefg compress VARIANT.onnx --max-drop {v['max_drop']:g} --max-class-drop {v['max_class_drop']:g}` "
        f"(NNCF accuracy control, transformer model type, SmoothQuant {'default (0.95)' if v.get('smooth_quant') is None else v['smooth_quant']}; "
        f"calibration {v['calibration']['images']} stratified cub100/train images; the control validates on the same images as the table), next to plain INT8 "
        f"of the same file (same quantizer settings, no accuracy control). Scored with OpenVINO on {images}; Δ = change vs that variant's FP32; "
        f"worst class = images lost by the worst class, its paired sign-test p (Bonferroni-adjusted for {v['rows'][0]['int8_acc'].get('classes_compared', 100) if v['rows'] else 100} classes); "
        f"speed-up = batch-1 latency of that variant's FP32 / INT8, the models of each row timed in one interleaved loop. "
        f"Written by `python benchmarks/compress_figures.py vit-int8`; wall times on the shared 2-core machine (waits for other jobs included), "
        f"{sum(r['seconds']['variant_total'] for r in v['rows']) / 60:.0f} min in all.", "",
        "| variant | FP32 top-1 | plain INT8: Δ top-1, speed-up; worst class lost, p (adj.) | accuracy-aware INT8: top-1, Δ, speed-up (vs plain ViT FP32) | worst class (acc-aware): lost, p (adj.) | reverted to float by the control | goal ≤ 0.5 pt at ≥ 1.5× | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in v["rows"]:
        a, p = r["int8_acc"], r["int8_plain"]
        rev = ", ".join(f"`{m}`" for m in a["reverted_modules"]) or "none"
        lines.append(
            f"| {r['variant']} | {100 * r['fp32']['top1']:.2f} % | {_fmt_drop(p['top1_drop_pts'])}, {p['speedup']:.2f}×; "
            f"{p['worst_class_drop_images']}, p={p['worst_class_p']:.2g} ({p['worst_class_p_adjusted']:.2g}) | "
            f"{100 * a['top1']:.2f} %, {_fmt_drop(a['top1_drop_pts'])}, {a['speedup']:.2f}× ({a['speedup_vs_plain_vit_fp32']:.2f}×) | "
            f"{a['worst_class_drop_images']}, p={a['worst_class_p']:.2g} ({a['worst_class_p_adjusted']:.2g}) | {rev} | "
            f"{'yes' if r['meets_target'] else 'no'} | {r['seconds']['variant_total'] / 60:.1f} min |")
    if v["rows"]:
        r0 = v["rows"][0]
        preset = r0["int8_acc"]["float_in_plain_int8"]
        lines += ["", f"Weighted layers in float in every INT8 model, plain too: {len(preset)} "
                      f"({', '.join(sorted({m for m in (r0['int8_acc']['float_layer_modules'].get(n, n) for n in preset)})) or 'none'}) — "
                      "NNCF's transformer preset does not quantize the attention score/value products. "
                      f"Latency: {r0['latency']}."]
        checks = [r for r in v["rows"] if r["int8_acc"].get("cli_plain_int8_top1_drop") is not None
                  and abs(r["int8_acc"]["cli_plain_int8_top1_drop"] - r["int8_plain"]["top1_drop_pts"]) > 0.05]
        if checks:
            lines += ["", "Plain INT8 here and NNCF's starting model in the CLI report differ for: "
                          + ", ".join(f"{r['variant']} ({_fmt_drop(r['int8_plain']['top1_drop_pts'])} vs {_fmt_drop(r['int8_acc']['cli_plain_int8_top1_drop'])})" for r in checks)]
    pending = [n for n in v.get("planned", []) if n not in {r["variant"] for r in v["rows"]}]
    if pending:
        lines += ["", f"**Not run yet** (the run was stopped before them; re-run the command to add them): {', '.join(pending)}."]
    if v.get("not_exported"):
        lines += ["", f"Not exported by the `vit` figure, so not run: {', '.join(v['not_exported'])}."]
    return "\n".join(lines) + "\n"
