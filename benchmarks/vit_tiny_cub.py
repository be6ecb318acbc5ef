"""Tiny ViT on cub100 (trained from scratch for a few minutes on CPU) → token reduction and ILA.

Run through ``python benchmarks/compress_figures.py vit [--minutes M]``. What it does, plainly:

1. a 6-block ViT (width 192, 3 heads, patch 8 at 112 px = 196 patch tokens — the token count of
   ViT-B/16 at 224 px) is trained from scratch on cub100/train with edgefg's training loop for
   ``--minutes`` (no pretrained ViT exists here, so its accuracy is low);
2. EViT and ToMe at keep 0.7 and 0.5 (reduction after blocks 2, 3, 4; no fine-tuning) and ILA
   adapters after blocks 1 and 3 (frozen backbone, adapters + head trained for ``--minutes / 2``)
   are exported to ONNX, scored on cub100/test with OpenVINO (f32) and timed in ONE interleaved
   loop (batch 1, same threads), so the throughput ratios are comparable.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _steps_for(minutes: float, step_fn, probe: int = 3) -> int:
    t0 = time.time()
    for _ in range(probe):
        step_fn()
    per = (time.time() - t0) / probe
    return max(probe, int(minutes * 60 / per))


def run(args) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from compress_figures import DATA, OUT, RUNS, TEST, TRAIN
    from edgefg.calibration.dataset import iter_batches, scan
    from edgefg.compress.adapters import AdapterOptions, build_ila_vit, describe, trainable_prefixes
    from edgefg.compress.tokens import TokenOptions, build_token_vit, check_runtimes, graph_ops
    from edgefg.compress.train import TrainConfig, train
    from edgefg.converters.torch_to_onnx import export_onnx
    from edgefg.manifest import Preprocess
    from edgefg.models.loader import read_labels
    from edgefg.models.stats import onnx_stats
    from edgefg.validate.metrics import classification

    torch.set_num_threads(2)
    labels = json.loads((DATA / "models" / "mobilenetv2_cub100" / "config.json").read_text())["label_names"]
    spec = Preprocess(input_size=(112, 112), resize_shorter=128, interpolation="bilinear")
    train_set, test_set = scan(TRAIN, labels), scan(TEST, labels)
    folder = RUNS / "vit-tiny-cub"
    kw = dict(img_size=112, patch_size=8, embed_dim=192, depth=6, num_heads=3, num_classes=len(labels))
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
    minutes = float(args.minutes)

    # 1. train from scratch for a fixed time budget (steps estimated from a short probe);
    #    a finished model in runs/ is reused (delete the folder to retrain)
    t0 = time.time()
    if (folder / "model.safetensors").is_file() and (folder / "train.json").is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        trained = json.loads((folder / "train.json").read_text())
        steps = trained["steps"]
        print(f"reusing the tiny ViT trained earlier ({steps} steps)")
    else:
        probe_x = torch.randn(32, 3, 112, 112)
        probe_y = torch.randint(0, len(labels), (32,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def probe_step():
            loss = torch.nn.functional.cross_entropy(model(probe_x), probe_y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps = _steps_for(minutes, probe_step)
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)
        per_epoch = len(train_set.samples) // 32
        cfg = TrainConfig(epochs=math.ceil(steps / per_epoch), max_steps=steps, lr=1e-3, weight_decay=0.05, batch_size=32, warmup_steps=min(50, steps // 10),
                          label_smoothing=0.1, aug_scale=(0.5, 1.0), checkpoint_dir=folder / "ckpt")
        res = train(model, train_set.samples, spec, cfg, description="tiny ViT")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({
            "architecture": "vit_tiny_patch16_224", "num_classes": len(labels), "label_names": labels, "model_args": {k: v for k, v in kw.items() if k != "num_classes"},
            "pretrained_cfg": {"input_size": [3, 112, 112], "interpolation": "bilinear", "crop_pct": 0.875, "mean": list(spec.mean), "std": list(spec.std), "num_classes": len(labels)},
        }, indent=1))
        trained = {"steps": res.steps, "minutes": round((time.time() - t0) / 60, 1), "history": res.history}
        (folder / "train.json").write_text(json.dumps(trained, indent=1))

    # 2. variants of the same weights
    variants = {"vit (no reduction)": model}
    for method in ("evit", "tome"):
        for keep in (0.7, 0.5):
            variants[f"{method} keep {keep}"] = build_token_vit(model, TokenOptions(keep=keep, method=method))
    t1 = time.time()
    ila = build_ila_vit(model, AdapterOptions(at=(1, 3)))
    ila_cfg = TrainConfig(epochs=1, max_steps=max(10, int(steps * 0.5)), lr=1e-3, batch_size=32, aug_scale=(0.5, 1.0), checkpoint_dir=folder / "ckpt-ila")
    ila_res = train(ila, train_set.samples, spec, ila_cfg, trainable=trainable_prefixes(ila), description="ILA adapters")
    ila_minutes = (time.time() - t1) / 60
    variants["ILA @ 1,3 (trained)"] = ila

    xs, ys = [], []
    for b in iter_batches(test_set.samples, spec, 64):
        xs.append(b.x)
        ys.append(b.labels)
    X, Y = np.concatenate(xs), np.concatenate(ys)

    import openvino as ov

    core = ov.Core()
    rows, compiled = [], {}
    work = RUNS / "vit-variants"
    work.mkdir(parents=True, exist_ok=True)
    for i, (name, module) in enumerate(variants.items()):
        path = export_onnx(module.eval(), (112, 112), work / f"{i}.onnx")
        c = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
        compiled[name] = c
        logits = np.concatenate([c(X[j : j + 32])[0] for j in range(0, len(X), 32)])
        m = classification(logits, Y, labels)
        row = {"variant": name, **onnx_stats(path), "top1": m["top1"], "top5": m["top5"], "worst_class_accuracy": m["worst_class_accuracy"]}
        if name != "vit (no reduction)":
            row["graph_indexing_ops"] = graph_ops(path)["indexing_ops"]
            row["runtimes"] = check_runtimes(path, (112, 112))
        rows.append(row)
    # one interleaved timing loop over all variants
    x1 = X[:1]
    times = {n: [] for n in compiled}
    for c in compiled.values():
        for _ in range(5):
            c(x1)
    for _ in range(args.rounds if hasattr(args, "rounds") else 8):
        for n, c in compiled.items():
            t = time.perf_counter()
            for _ in range(10):
                c(x1)
            times[n].append((time.perf_counter() - t) / 10 * 1e3)
    base = float(np.median(times["vit (no reduction)"]))
    for row in rows:
        ms = float(np.median(times[row["variant"]]))
        row.update(latency_ms_p50=ms, throughput_gain=base / ms)
    b = rows[0]
    for row in rows:
        row["top1_change_pts"] = 100 * (row["top1"] - b["top1"])
        row["macs_ratio"] = row["macs"] / b["macs"]
    # 3. INT8 of the plain ViT: NNCF transformer model type with and without SmoothQuant
    from edgefg.calibration.dataset import stratified_subset
    from edgefg.compress.quantize import QuantOptions, Runner, quantize_onnx

    calib = np.concatenate([b.x for b in iter_batches(stratified_subset(train_set.samples, 300, 0), spec, 64)])
    runner = Runner("openvino")
    import onnx

    int8_rows = []
    for label, sq in (("int8 transformer (NNCF default SmoothQuant)", None), ("int8 transformer, SmoothQuant off", -1.0), ("int8 transformer, SmoothQuant 0.5", 0.5)):
        dst = work / f"int8-{len(int8_rows)}.onnx"
        quantize_onnx(work / "0.onnx", dst, calib, options=QuantOptions(transformer=True, smooth_quant=sq))
        m = classification(runner.logits(onnx.load(str(dst)), X), Y, labels)
        int8_rows.append({"variant": label, "top1": m["top1"], "top1_change_pts": 100 * (m["top1"] - b["top1"]), "worst_class_accuracy": m["worst_class_accuracy"]})
        print(f"{label:<45} top-1 {m['top1']:.4f} ({int8_rows[-1]['top1_change_pts']:+.2f} pt)")

    result = {
        "setting": "6-block ViT (width 192, 3 heads, patch 8, 112 px, 196 patch tokens) trained from scratch on cub100/train on 2 shared CPU cores",
        "train": trained,
        "ila": {**describe(ila), "steps": ila_res.steps, "minutes": round(ila_minutes, 1)},
        "latency": "OpenVINO CPU f32, batch 1, 2 threads, interleaved rounds, median",
        "rows": rows,
        "int8": int8_rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vit.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    for row in rows:
        print(f"{row['variant']:<22} MACs {row['macs'] / 1e6:6.1f} M ({row['macs_ratio']:.2f}×)  latency {row['latency_ms_p50']:.2f} ms "
              f"(×{row['throughput_gain']:.2f} throughput)  top-1 {row['top1']:.4f} ({row['top1_change_pts']:+.2f} pt)")
    del read_labels


def retime(rounds: int = 30, iters: int = 10) -> None:
    """Re-time the exported variants of the last ``vit`` run (interleaved, batch 1): the median and
    the minimum of the per-round means — on a shared machine the minimum is the less noisy figure."""
    import openvino as ov

    from compress_figures import OUT, RUNS

    result = json.loads((OUT / "vit.json").read_text())
    core = ov.Core()
    work = RUNS / "vit-variants"
    compiled = {}
    for i, row in enumerate(result["rows"]):
        compiled[row["variant"]] = core.compile_model(core.read_model(str(work / f"{i}.onnx")), "CPU",
                                                      {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2})
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
    times = {n: [] for n in compiled}
    for c in compiled.values():
        for _ in range(5):
            c(x)
    for _ in range(rounds):
        for n, c in compiled.items():
            t = time.perf_counter()
            for _ in range(iters):
                c(x)
            times[n].append((time.perf_counter() - t) / iters * 1e3)
    base_med, base_min = float(np.median(times[result["rows"][0]["variant"]])), float(np.min(times[result["rows"][0]["variant"]]))
    for row in result["rows"]:
        t = times[row["variant"]]
        row.update(latency_ms_p50=float(np.median(t)), latency_ms_min=float(np.min(t)),
                   throughput_gain=base_med / float(np.median(t)), throughput_gain_min=base_min / float(np.min(t)))
        print(f"{row['variant']:<22} MACs ×{row['macs_ratio']:.2f}  median {row['latency_ms_p50']:.2f} ms (×{row['throughput_gain']:.2f})  "
              f"min {row['latency_ms_min']:.2f} ms (×{row['throughput_gain_min']:.2f})")
    result["latency"] = f"OpenVINO CPU f32, batch 1, 2 threads, {rounds} interleaved rounds of {iters}: median and minimum of the round means"
    (OUT / "vit.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
