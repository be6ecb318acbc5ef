"""A hybrid ViT on cub100 → token reduction (EViT, ToMe, CLCA), ILA adapters and INT8, measured.

Run through ``python benchmarks/compress_figures.py vit [--vit-epochs N]``. No pretrained ViT is
available here and a ViT trained from scratch on 3,000 images stays near chance (the first version of
this figure: 2.7 % top-1), so the model is a **hybrid ViT** in the sense of the ViT paper's
ResNet-hybrids, built from timm parts:

* patch embedding = timm ``HybridEmbed`` over mobilenetv2_cub100's first 14 blocks (stride 16,
  96 channels, **frozen**, pretrained on iNat birds) + a 1×1 projection → 14×14 = 196 patch
  tokens at 224 px (the token count of ViT-B/16);
* 6 standard timm ``Block`` layers, width 192, 3 heads (a 6-block DeiT-Tiny), CLS token, linear head;
* the transformer part (≈ 2.7 M parameters) trained with edgefg's training loop on cub100/train,
  distilled from mobilenetv2_cub100 (Hinton KD, as DeiT does with a CNN teacher).

Then, from those weights, in one run: EViT and ToMe at keep 0.7 and 0.5 (reduction after blocks 2, 3,
4) without fine-tuning; EViT keep 0.5 with one epoch of KD fine-tuning, without and with CLCA (so
CLCA's share is separated from the fine-tuning's); ILA adapters after blocks 1 and 3 (frozen ViT,
adapters + head trained); INT8 of the plain ViT (NNCF transformer model type, SmoothQuant default and
off), and EViT/ToMe keep 0.5 + INT8. Every variant is exported to ONNX, scored on all of cub100/test with OpenVINO (scores cached by
the file's sha256, shared with ``benchmarks/pareto.py``) and timed in ONE interleaved loop.
"""
from __future__ import annotations

import copy
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/vit_hybrid_cub.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import COMPRESS_RESULTS as OUT
from benchmarks.common import COMPRESS_RUNS as RUNS
from benchmarks.common import MODEL, REPO, TEST, TRAIN, write_json

SETTING = ("hybrid ViT: frozen mobilenetv2_cub100 stem (blocks 0-13, stride 16) → 196 tokens → 6 timm Blocks "
           "(width 192, 3 heads), 224 px; transformer trained on cub100/train with KD from mobilenetv2_cub100, "
           "on 2 shared CPU cores")
BACKBONE = "patch_embed.backbone."


def build_hybrid(model_dir: Path, num_classes: int):
    """The hybrid ViT with mobilenetv2_cub100's stem weights (transformer part freshly initialised)."""
    import timm
    import torch
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_hybrid import HybridEmbed

    from edgefg.models.loader import exportable_layers

    torch.manual_seed(0)
    with exportable_layers():
        stem = timm.create_model("mobilenetv2_100", features_only=True, out_indices=(3,), pad_type="same", pretrained=False)
    missing, _ = stem.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=False)
    assert not missing, missing
    stem.eval()
    return VisionTransformer(img_size=224, patch_size=1, embed_dim=192, depth=6, num_heads=3, num_classes=num_classes,
                             embed_layer=partial(HybridEmbed, backbone=stem))


def trainable_outside(model, exclude: str) -> list[str]:
    """Every parameter name outside ``exclude`` (the training loop trains names starting with these).
    Full names, not module prefixes: a wrapper's ``vit.cls_token`` would give the prefix ``vit.``,
    which covers the frozen stem too (and un-freezes its BatchNorms)."""
    return sorted(name for name, _ in model.named_parameters() if exclude not in name)


def run(args) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from benchmarks.pareto import score_onnx, time_interleaved
    from edgefg.calibration.dataset import iter_batches, scan, stratified_subset
    from edgefg.compress.adapters import AdapterOptions, build_ila_vit, trainable_prefixes
    from edgefg.compress.adapters import describe as ila_describe
    from edgefg.compress.quantize import QuantOptions, quantize_onnx
    from edgefg.compress.tokens import TokenOptions, build_token_vit, check_runtimes, graph_ops
    from edgefg.compress.train import TrainConfig, train
    from edgefg.converters.torch_to_onnx import export_onnx
    from edgefg.models.loader import load_model
    from edgefg.models.stats import onnx_stats

    torch.set_num_threads(2)
    teacher_model = load_model(MODEL)
    labels, spec = teacher_model.labels, teacher_model.preprocess
    train_set = scan(TRAIN, labels)
    smoke = bool(getattr(args, "vit_smoke", False))  # a few steps everywhere, 300 test images: checks the script, not the model
    folder = RUNS / ("vit-hybrid-smoke" if smoke else "vit-hybrid")
    limit = 300 if smoke else None
    work = folder / "variants"
    work.mkdir(parents=True, exist_ok=True)
    model = build_hybrid(MODEL, len(labels))
    epochs = int(args.vit_epochs)

    def cfg(name: str, n_epochs: int, lr: float) -> TrainConfig:
        return TrainConfig(epochs=n_epochs, lr=lr, weight_decay=0.05, batch_size=32, warmup_steps=min(90, 30 * n_epochs),
                           label_smoothing=0.1, checkpoint_dir=folder / f"ckpt-{name}", checkpoint_every=30, threads=2,
                           max_steps=3 if smoke else None)

    # 1. the hybrid ViT (reused from runs/ when trained before with the same epochs)
    t0 = time.time()
    base_file = folder / "model.safetensors"
    trained = json.loads((folder / "train.json").read_text()) if (folder / "train.json").is_file() else None
    if trained and trained.get("epochs") == epochs and base_file.is_file():
        model.load_state_dict(load_file(str(base_file)))
        print(f"reusing the hybrid ViT trained earlier ({trained['steps']} steps, {trained['minutes']} min)")
    else:
        import shutil

        for name in ("evit-ft", "clca", "ila"):  # fine-tunes of an older base must not be resumed
            shutil.rmtree(folder / f"ckpt-{name}", ignore_errors=True)
        res = train(model, train_set.samples, spec, cfg("base", epochs, 5e-4), teacher=teacher_model.module,
                    trainable=trainable_outside(model, BACKBONE), description="hybrid ViT")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(base_file))
        trained = {"epochs": epochs, "steps": res.steps, "minutes": round((time.time() - t0) / 60, 1), "history": res.history,
                   "trainable_params": res.trainable_params, "lr": 5e-4, "kd": "T=4, alpha=0.7, teacher mobilenetv2_cub100"}
        (folder / "train.json").write_text(json.dumps(trained, indent=1))
    model.eval()

    # 2. variants of the same weights (trained ones get their own copy)
    variants: dict[str, dict] = {"plain ViT": {"module": model}}
    for method in ("evit", "tome"):
        for keep in (0.7, 0.5):
            variants[f"{'EViT' if method == 'evit' else 'ToMe'} keep {keep}"] = {"module": build_token_vit(model, TokenOptions(keep=keep, method=method))}
    for clca in (False, True):
        name = "EViT keep 0.5 + CLCA, 1 epoch KD" if clca else "EViT keep 0.5, 1 epoch KD"
        wrapped = build_token_vit(copy.deepcopy(model), TokenOptions(keep=0.5, method="evit", clca=clca))
        t1 = time.time()
        res = train(wrapped, train_set.samples, spec, cfg("clca" if clca else "evit-ft", 1, 2e-4), teacher=model,
                    trainable=trainable_outside(wrapped, BACKBONE), description=name)
        variants[name] = {"module": wrapped.eval(), "train": {"steps": res.steps, "minutes": round((time.time() - t1) / 60, 1),
                                                            "trainable_params": res.trainable_params, "teacher": "the plain hybrid ViT"}}
    ila = build_ila_vit(copy.deepcopy(model), AdapterOptions(at=(1, 3)))
    t1 = time.time()
    res = train(ila, train_set.samples, spec, cfg("ila", 2, 1e-3), trainable=trainable_prefixes(ila), description="ILA adapters")
    variants["ILA @ 1,3, 2 epochs"] = {"module": ila.eval(), "train": {"steps": res.steps, "minutes": round((time.time() - t1) / 60, 1),
                                                                      **ila_describe(ila)}}

    # 3. export, INT8 of the plain ViT, score everything on cub100/test
    for i, v in enumerate(variants.values()):
        v["onnx"] = export_onnx(v.pop("module"), spec.input_size, work / f"{i}.onnx")
    calib = np.concatenate([b.x for b in iter_batches(stratified_subset(train_set.samples, 50 if smoke else 300, 0), spec, 50)])
    for label, sq in (("INT8 (NNCF transformer, SmoothQuant default)", None), ("INT8 (NNCF transformer, SmoothQuant off)", -1.0)):
        dst = work / f"int8-{'sq' if sq is None else 'nosq'}.onnx"
        quantize_onnx(variants["plain ViT"]["onnx"], dst, calib, options=QuantOptions(transformer=True, smooth_quant=sq))
        variants[label] = {"onnx": dst}
    for name in ("EViT keep 0.5", "ToMe keep 0.5"):  # the two compressions combined
        dst = work / f"int8-{name.split()[0].lower()}.onnx"
        quantize_onnx(variants[name]["onnx"], dst, calib, options=QuantOptions(transformer=True))
        variants[f"{name} + INT8"] = {"onnx": dst}

    ref = score_onnx(variants["plain ViT"]["onnx"], TEST, labels, spec, limit)
    rows = []
    for name, v in variants.items():
        m = score_onnx(v["onnx"], TEST, labels, spec, limit)
        row = {"variant": name, "onnx": str(Path(v["onnx"]).relative_to(REPO)), **onnx_stats(v["onnx"]), **m.summary(ref)}
        if name != "plain ViT" and not name.startswith("INT8"):
            row["graph_indexing_ops"] = graph_ops(v["onnx"])["indexing_ops"]
            row["runtimes"] = check_runtimes(v["onnx"], spec.input_size)
        if "train" in v:
            row["train"] = v["train"]
        rows.append(row)
    timing = time_interleaved({r["variant"]: REPO / r["onnx"] for r in rows}, spec.input_size, rounds=args.rounds)
    base = timing["plain ViT"]["latency_ms_p50"]
    for row in rows:
        row.update(timing[row["variant"]], throughput_gain=base / timing[row["variant"]]["latency_ms_p50"],
                   macs_ratio=row["macs"] / rows[0]["macs"])
    result = {
        "setting": SETTING,
        "train": trained,
        "latency": timing["_method"],
        "rows": rows,
        "pareto_family": "hybrid ViT (cub100)",
    }
    out_dir = folder if smoke else OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "vit.json", result)
    # the exported models are usable as edgefg inputs (e.g. `edgefg compress variants/0.onnx --max-drop 0.5`)
    teacher_cfg = json.loads((MODEL / "config.json").read_text())
    write_json(work / "config.json", {"label_names": labels, "pretrained_cfg": teacher_cfg["pretrained_cfg"]}, indent=1)
    write_json(folder / "variants.json", {r["variant"]: r["onnx"] for r in rows}, indent=1)
    for row in rows:
        print(f"{row['variant']:<46} MACs {row['macs'] / 1e6:6.0f} M ({row['macs_ratio']:.2f}×)  {row['latency_ms_p50']:.2f} ms "
              f"(batch-1 speed-up ×{row['throughput_gain']:.2f})  top-1 {100 * row['top1']:.2f} % ({row['top1_change_pts']:+.2f} pt)  "
              f"worst class drop {row['worst_class_drop_images']} img (p={row['worst_class_p']:.3g})")
    return result
