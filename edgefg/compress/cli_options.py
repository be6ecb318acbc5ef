"""The options of ``edgefg compress`` that belong to no one step (evaluation, training, the report), and the
command class that adds each registered step's own options (``StepSpec.options``, edgefg/compress/steps.py).

Click only at import time (cli.py stays thin): ``edgefg run`` imports this module and must load no
compression code, so the step registry is read when ``compress`` is parsed or shown, not before.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgefg.compress import ILA_DEFAULT_AT  # not .steps: `edgefg run` loads these options and must not load compression code


class CompressCommand(click.Command):
    """``edgefg compress``: its own options, then every registered step's (read from the step registry
    when the command is parsed or shown, and again after a step is registered or removed)."""

    _own: list[click.Parameter]
    _all: list[click.Parameter]
    _steps_seen: tuple[int, ...] | None

    @property  # type: ignore[override]
    def params(self) -> list[click.Parameter]:
        from edgefg.compress.steps import cli_params

        step_params = cli_params()
        seen = tuple(map(id, step_params))
        if seen != self._steps_seen:  # the same list otherwise: click appends and pops its help option on it
            own = {o for p in self._own for o in p.opts}
            clash = [o for p in step_params for o in p.opts if o in own]
            if clash:
                raise ValueError(f"a compress step declares {', '.join(clash)}, an option of the command itself")
            self._all[:] = [*self._own, *step_params]
            self._steps_seen = seen
        return self._all

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own, self._all, self._steps_seen = list(value), list(value), None


OPTIONS = [
    click.option("--class-alpha", type=float, default=0.05, show_default=True, help="Significance level for calling a class drop real (family-wise over the classes); the same rule as validate/tune --max-class-drop."),
    click.option("--early-stop-drop", type=click.FloatRange(0), help="Stop a distillation after an epoch when its top-1 drop (points, on the validation images) "
                 "cannot come within this budget even at the last epoch's rate of improvement; the model so far is written, exit 1."),
    click.option("--class-gate", type=click.Choice(["evidence", "points"]), default="evidence", show_default=True,
                 help="evidence: a class fails when over --max-class-drop AND significant; points: every drop over it fails (one image can decide)."),
    click.option("--val-size", type=int, help="Evaluate on a stratified subset of N validation images."),
    click.option("--eval-backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", show_default=True, help="Engine for the report's accuracy/latency (auto: OpenVINO when installed)."),
    click.option("--kd-temperature", type=float, default=4.0, show_default=True, help="Distillation temperature T."),
    click.option("--kd-alpha", type=float, default=0.7, show_default=True, help="Weight of the distillation term (1-alpha on cross-entropy)."),
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
    click.option("--crop-mode", type=click.Choice(["center", "squash", "border"]), help="Override the model's eval crop mode (timm: center, squash, border); "
                 "a bare checkpoint's own (default center)."),
    click.option("--crop-pct", type=float, help="Override the model's crop fraction (resize to input/crop_pct, then crop; 1.0 = no crop); a bare checkpoint's own."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS), help="Override the resize interpolation (area: opencv only; box/hamming/lanczos: pil only); "
                 "a bare checkpoint's own."),
    click.option("--resize", type=click.Choice(["pil", "opencv"]), help="Resizer: pil reproduces timm exactly (default for timm models); opencv is faster and approximate."),
]


PAD_TYPE_CHOICES = ["same", "valid", "symmetric"]  # edgefg.models.loader.PAD_TYPES (not imported: click only here)
# what a bare checkpoint (weights only) does not say: compress and tune take the same options (--crop-pct,
# --interpolation, --crop-mode too: compress has them above, tune from BARE_CROP_OPTIONS)
CHECKPOINT_OPTIONS = [
    click.option("--config", "config", type=click.Path(path_type=Path), help="Bare checkpoint: the model's timm/HF hub config.json (architecture, "
                 "num_classes, label_names, pretrained_cfg with mean/std/crop_pct/interpolation/input_size, model_args such as pad_type)."),
    click.option("--mean", type=float, nargs=3, help="Bare checkpoint: input mean on 0-1 pixels (R G B)."),
    click.option("--std", type=click.FloatRange(0, min_open=True), nargs=3, help="Bare checkpoint: input std on 0-1 pixels (R G B)."),
    click.option("--model-input-size", type=click.IntRange(1, 8192), nargs=2, help="Bare checkpoint: the input size the model was trained for, H W."),
    click.option("--pad-type", type=click.Choice(PAD_TYPE_CHOICES),
                 help="Bare checkpoint: timm's pad_type (same = TF-ported weights, e.g. MobileNet/EfficientNet from TF; symmetric = PyTorch's)."),
    click.option("--timm-defaults", is_flag=True, help="Bare checkpoint: accept timm's defaults for --arch for every setting not given "
                 "(otherwise an unknown one is refused)."),
]
BARE_CROP_OPTIONS = [
    click.option("--crop-pct", type=click.FloatRange(0, 1, min_open=True), help="Bare checkpoint: crop fraction (resize to input/crop_pct, then crop; 1.0 = no crop)."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS), help="Bare checkpoint: resize interpolation."),
    click.option("--crop-mode", type=click.Choice(["center", "squash", "border"]), help="Bare checkpoint: timm eval crop mode (default center)."),
]


def checkpoint_options(fn: Callable, crop: bool = False) -> Callable:
    """The bare-checkpoint options (``crop``: with --crop-pct/--interpolation/--crop-mode, for a command without
    :data:`PREPROCESS_OPTIONS`)."""
    for opt in reversed(CHECKPOINT_OPTIONS + (BARE_CROP_OPTIONS if crop else [])):
        fn = opt(fn)
    return fn


def checkpoint_settings(config: Path | None = None, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                        model_input_size: tuple[int, ...] | None = None, pad_type: str | None = None, timm_defaults: bool = False,
                        crop_pct: float | None = None, interpolation: str | None = None, crop_mode: str | None = None):
    """The options' values as :class:`edgefg.models.loader.CheckpointSettings` (click gives () or None for an unset nargs option)."""
    from edgefg.models.checkpoint import CheckpointSettings

    return CheckpointSettings(config=config, mean=tuple(mean) if mean else None, std=tuple(std) if std else None,  # type: ignore[arg-type]
                              input_size=tuple(model_input_size) if model_input_size else None,  # type: ignore[arg-type]
                              crop_pct=crop_pct, interpolation=interpolation, crop_mode=crop_mode, pad_type=pad_type, timm_defaults=timm_defaults)


def preprocess_options(fn: Callable) -> Callable:
    """The preprocessing overrides shared by ``compress`` and ``deploy`` (model files)."""
    for opt in reversed(PREPROCESS_OPTIONS):
        fn = opt(fn)
    return fn


def compress_options(fn: Callable) -> Callable:
    """The options above (a command of class :class:`CompressCommand` gets the steps' own)."""
    for opt in reversed(OPTIONS):
        fn = opt(fn)
    return fn


def options_from_cli(**kw: Any):
    """The run's CompressOptions from the command's values; the options of a step registered without a
    field there go into ``flags``."""
    from edgefg.compress.options import CompressOptions
    from edgefg.compress.steps import cli_params

    kw["ignored"] = list(kw.get("ignored") or [])
    kw["plot"] = not kw.pop("no_plot", False)
    if kw.get("adapter_at") is None:
        kw["adapter_at"] = list(ILA_DEFAULT_AT)
    fields = {f.name for f in dataclasses.fields(CompressOptions)}
    flags = {k: kw.pop(k) for k in [k for k in kw if k not in fields]}
    unknown = set(flags) - {p.name for p in cli_params()}
    if unknown:
        raise TypeError(f"options_from_cli: unknown option(s) {', '.join(sorted(unknown))}")
    return CompressOptions(**kw, flags=flags)
