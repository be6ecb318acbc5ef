"""The compression options of ``edgefg compress`` (click only at import time; cli.py stays thin)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from edgefg.compress import ILA_DEFAULT_AT  # not .steps: `edgefg run` loads these options and must not load compression code


def _ints(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("expected comma-separated block indices, e.g. 3,7") from None


OPTIONS = [
    click.option("--max-drop", type=float, help="INT8 accuracy control: largest allowed top-1 drop in points (NNCF reverts layers to float)."),
    click.option("--max-class-drop", type=float, help="Per-class budget in points; a class fails only if its drop is also significant (paired sign test, Holm-corrected over the classes)."),
    click.option("--class-alpha", type=float, default=0.05, show_default=True, help="Significance level for calling a class drop real (family-wise over the classes); the same rule as validate/tune --max-class-drop."),
    click.option("--early-stop-drop", type=click.FloatRange(0), help="Stop a distillation after an epoch when its top-1 drop (points, on the validation images) "
                 "cannot come within this budget even at the last epoch's rate of improvement; the model so far is written, exit 1."),
    click.option("--class-gate", type=click.Choice(["evidence", "points"]), default="evidence", show_default=True,
                 help="evidence: a class fails when over --max-class-drop AND significant; points: every drop over it fails (one image can decide)."),
    click.option("--smooth-quant", type=float, help="SmoothQuant alpha for MatMul/Gemm: ViTs (default 0.95), CNNs their classifier head (default off); negative disables."),
    click.option("--agreement-data", type=click.Path(path_type=Path),
                 help="Unlabelled images (any folder, searched recursively) the model was not trained on, e.g. camera frames: NNCF's accuracy control then keeps top-1 agreement with the FP32 model on them (no labels needed)."),
    click.option("--min-agreement", type=click.FloatRange(0, 1, min_open=True),
                 help="With --agreement-data: smallest allowed top-1 agreement with FP32 (default 0.99); NNCF reverts layers to float until it holds."),
    click.option("--agreement-size", type=click.IntRange(1), help="Read at most N agreement images (a seeded random subset; default 2000)."),
    click.option("--max-reverts", type=click.IntRange(1), help="Accuracy control: most layers (quantizer groups) reverted to float, by NNCF and by the per-class budget each."),
    click.option("--bias-correction", type=click.Choice(["fast", "full", "off"]),
                 help="INT8 bias correction: fast (NNCF default), full (BiasCorrection, layer by layer: slower) or off."),
    click.option("--ignore", "ignored", multiple=True, help="ONNX node name to keep in float (repeatable)."),
    click.option("--val-size", type=int, help="Evaluate on a stratified subset of N validation images."),
    click.option("--eval-backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", show_default=True, help="Engine for the report's accuracy/latency (auto: OpenVINO when installed)."),
    click.option("--input-size", type=click.IntRange(16, 4096), help="Input down-sampling: the model takes SIZE×SIZE (e.g. 192), distilled from the full-resolution model (CNNs)."),
    click.option("--prune", type=float, help="Structured pruning ratio (e.g. 0.3), followed by distillation from the unpruned model."),
    click.option("--prune-rounds", type=click.IntRange(1, 20), default=1, show_default=True,
                 help="Prune in N rounds (ratios compounding to --prune), distilling after each; --epochs is then the total "
                      "(a fifth after each intermediate round, the rest after the last)."),
    click.option("--kd-temperature", type=float, default=4.0, show_default=True, help="Distillation temperature T."),
    click.option("--kd-alpha", type=float, default=0.7, show_default=True, help="Weight of the distillation term (1-alpha on cross-entropy)."),
    click.option("--token-keep", type=float, help="ViT token keep rate at each reduction block (e.g. 0.5)."),
    click.option("--token-method", type=click.Choice(["evit", "tome"]), default="evit", show_default=True),
    click.option("--token-at", callback=_ints, help="0-based blocks that reduce tokens (default ≈ depth/4, /2, 3/4)."),
    click.option("--clca", is_flag=True, help="Add the Cross-Layer Cache + Aggregation head (then fine-tune)."),
    click.option("--adapters", type=click.Choice(["ila"]), help="Insert down-sampling inter-layer adapters (frozen backbone)."),
    click.option("--adapter-at", callback=_ints, default=",".join(map(str, ILA_DEFAULT_AT)), show_default=True, help="0-based blocks followed by an adapter."),
    click.option("--adapter-dim", type=int, default=8, show_default=True),
    click.option("--epochs", type=int, help="Training epochs for distillation / CLCA / ILA steps (default 1)."),
    click.option("--lr", type=float, help="Learning rate for training steps."),
    click.option("--train-batch", type=int, default=32, show_default=True),
    click.option("--max-steps", type=int, help="Stop each training step after N optimizer steps (smoke runs)."),
    click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True),
    click.option("--device", default="cpu", show_default=True, help="Where training steps and gradient-based pruning run: cpu, cuda or cuda:N (bf16 autocast on CUDA)."),
    click.option("--train-precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                 help="Training arithmetic: auto = bf16 autocast on CUDA, fp32 on the CPU; bf16 on a CPU needs AVX512-BF16 or AMX "
                      "(faster there than fp32)."),
    click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Training checkpoints (resumed when present; default: .<output>.ckpt, removed on success)."),
    click.option("--latency-iters", type=int, default=30, show_default=True, help="Timed batch-1 inferences per step for the report."),
    click.option("--no-plot", is_flag=True, help="Do not write report.png."),
    click.option("--check-preprocess/--no-check-preprocess", default=True, show_default=True,
                 help="Compare edgefg's input tensors with timm's own eval transform on calibration images; refuse (exit 2) on a mismatch."),
]


INTERPOLATIONS = ["bilinear", "bicubic", "nearest", "box", "hamming", "lanczos", "area"]
PREPROCESS_OPTIONS = [
    click.option("--crop-mode", type=click.Choice(["center", "squash", "border"]), help="Override the model's eval crop mode (timm: center, squash, border)."),
    click.option("--crop-pct", type=float, help="Override the model's crop fraction (resize to input/crop_pct, then crop; 1.0 = no crop)."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS), help="Override the resize interpolation (area: opencv only; box/hamming/lanczos: pil only)."),
    click.option("--resize", type=click.Choice(["pil", "opencv"]), help="Resizer: pil reproduces timm exactly (default for timm models); opencv is faster and approximate."),
]


def preprocess_options(fn: Callable) -> Callable:
    """The preprocessing overrides shared by ``compress`` and ``deploy`` (model files)."""
    for opt in reversed(PREPROCESS_OPTIONS):
        fn = opt(fn)
    return fn


def compress_options(fn: Callable) -> Callable:
    for opt in reversed(OPTIONS):
        fn = opt(fn)
    return fn


def options_from_cli(**kw: Any):
    from edgefg.compress.api import CompressOptions

    kw["ignored"] = list(kw.get("ignored") or [])
    kw["plot"] = not kw.pop("no_plot", False)
    if kw.get("adapter_at") is None:
        kw["adapter_at"] = list(ILA_DEFAULT_AT)
    return CompressOptions(**kw)
