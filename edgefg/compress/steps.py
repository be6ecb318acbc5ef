"""The compress-step registry: one :class:`StepSpec` per step type.

Each step declares its recipe keys with their defaults, whether it trains (so ``--epochs/--lr/
--max-steps`` apply) and distils from the unchanged model, its report label, and — for the PyTorch
steps — the function that applies it. Recipes (:mod:`edgefg.compress.recipes`), the CLI's option
folding and the compress loop (:mod:`edgefg.compress.api`) all read this table; a new step is one
``register(StepSpec(...))`` here.

The ``int8`` step is registered too (keys, label) but applied by the compress loop itself: it
works on the exported ONNX, after every PyTorch step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgefg.errors import DataError, UnsupportedError

if TYPE_CHECKING:
    from edgefg.compress.api import CompressOptions
    from edgefg.compress.early_stop import EarlyStop
    from edgefg.models.loader import LoadedModel

from edgefg.compress import ILA_DEFAULT_AT
TRAIN_KEYS = {"epochs": 1, "lr": 5e-4, "batch_size": None, "optimizer": None, "max_steps": None}
KD_KEYS = {"temperature": None, "alpha": None}


@dataclass
class StepContext:
    """What a PyTorch step sees: the module so far, the unchanged model as teacher, the user's
    labelled images and the run's options."""

    index: int
    module: Any
    teacher: Any
    model: "LoadedModel"
    train_samples: list
    opts: "CompressOptions"
    checkpoint_root: Path
    early_stop: "EarlyStop | None" = None  # stop a distillation that cannot reach its budget (compress/early_stop.py)

    def need_data(self, kind: str) -> None:
        if not self.train_samples:
            raise DataError(f"step '{kind}' trains and needs labelled images", "pass --data DIR with one sub-folder per class")

    def checkpoint(self, kind: str) -> Path:
        return self.checkpoint_root / f"{self.index:02d}-{kind}"


@dataclass
class StepOutcome:
    module: Any
    description: dict[str, Any]
    model: "LoadedModel | None" = None  # a new LoadedModel when the step changes preprocessing (resize)


@dataclass(frozen=True)
class StepSpec:
    name: str
    summary: str
    keys: dict[str, Any]  # recipe key → default (None: the run's option decides)
    label: Callable[[dict], str]
    apply: Callable[[StepContext, dict], StepOutcome] | None = None  # None: not a PyTorch step (int8)
    trains: Callable[[dict], bool] = lambda step: False
    distils: Callable[[dict], bool] = lambda step: False
    check: Callable[[dict, str], None] | None = None  # extra validation of one step's values
    position: str = "any"  # any | first | last

    @property
    def torch(self) -> bool:
        return self.apply is not None

    def default(self, step: dict, key: str) -> Any:
        return step.get(key, self.keys.get(key))


STEPS: dict[str, StepSpec] = {}


def register(spec: StepSpec) -> StepSpec:
    if spec.name in STEPS:
        raise ValueError(f"compress step '{spec.name}' is registered twice")
    STEPS[spec.name] = spec
    return spec


def spec(kind: str) -> StepSpec:
    try:
        return STEPS[kind]
    except KeyError:
        raise UnsupportedError(f"unknown step type '{kind}'", f"step types: {', '.join(STEPS)}") from None


def label(step: dict) -> str:
    return spec(step["type"]).label(step)


# -- shared training plumbing ----------------------------------------------------------------------


def train_config(step: dict, opts: "CompressOptions", ckpt: Path | None):
    """The trainer's config for a training step: the step's keys, else the run's options."""
    from edgefg.compress.train import TrainConfig, training_precision

    s = spec(step["type"])
    cuda = opts.device.startswith("cuda")
    return TrainConfig(
        epochs=int(s.default(step, "epochs") or 1),
        lr=float(s.default(step, "lr") or 5e-4),
        optimizer=str(step.get("optimizer") or opts.optimizer),
        batch_size=int(step.get("batch_size") or opts.train_batch),
        max_steps=step.get("max_steps"),
        kd_temperature=float(step.get("temperature", opts.kd_temperature)),
        kd_alpha=float(step.get("alpha", opts.kd_alpha)),
        seed=opts.seed,
        checkpoint_dir=ckpt,
        device=opts.device,
        amp=training_precision(opts.train_precision, opts.device),
        num_workers=min(8, os.cpu_count() or 1) if cuda else 0,
        data_on_device=cuda,  # decode once, augment on the GPU: PIL augmentation cannot keep a GPU fed
    )


def train_description(cfg, res) -> dict[str, Any]:
    from edgefg.compress.train import augmentation_label

    return {
        "epochs": cfg.epochs,
        "steps": res.steps,
        "lr": cfg.lr,
        "optimizer": cfg.optimizer,
        "batch_size": cfg.batch_size,
        "schedule": "cosine",
        "precision": f"bf16 autocast on {cfg.device}" if cfg.amp else "fp32",
        "augmentation": augmentation_label(cfg),
        "trainable_params": res.trainable_params,
        "resumed_from_step": res.resumed_from_step,
        "history": res.history,
    }


def prune_batch(samples, model: "LoadedModel", seed: int, size: int = 128):
    """A stratified batch of training images (edgefg preprocessing) for gradient-based importance."""
    import numpy as np
    import torch

    from edgefg.calibration.dataset import iter_batches, stratified_subset

    xs, ys = [], []
    for b in iter_batches(stratified_subset(samples, size, seed), model.preprocess, 64):
        xs.append(b.x)
        ys.append(b.labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)).long()


# -- the steps -------------------------------------------------------------------------------------


def _apply_resize(ctx: StepContext, step: dict) -> StepOutcome:
    """Input down-sampling: the model takes a ``size``×``size`` input (preprocessing keeps crop mode
    and crop_pct, so the crop covers the same part of the image), then is distilled from the
    full-resolution model: the teacher sees the full-resolution augmented batch, the student the
    same batch down-sampled."""
    import torch

    from edgefg.compress.train import train
    from edgefg.models.loader import with_input_size

    model, module, size = ctx.model, ctx.module, int(step["size"])
    old = model.preprocess.input_size
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, 3, size, size))
        assert out.shape[-1] == model.num_classes
    except Exception as exc:  # fixed position embeddings, a flatten before the head, ...
        raise UnsupportedError(
            f"{model.arch or 'the model'} cannot take a {size}×{size} input: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}",
            "--input-size works for CNNs with global pooling; drop it for this model",
        ) from None
    desc: dict[str, Any] = {"method": "input down-sampling", "input_size_before": list(old), "input_size_after": [size, size],
                            "macs_note": "MACs scale with the input area"}
    if step.get("epochs", 1):
        if not ctx.train_samples:
            raise DataError("input down-sampling distils and needs labelled images", "pass --data DIR with one sub-folder per class")
        cfg = train_config(step, ctx.opts, ctx.checkpoint("resize"))
        res = train(module, ctx.train_samples, model.preprocess, cfg, teacher=ctx.teacher, description=f"distil at {size}px", student_size=(size, size),
                    on_epoch=ctx.early_stop)
        desc.update(train_description(cfg, res), teacher="the input model at full resolution", temperature=cfg.kd_temperature, alpha=cfg.kd_alpha)
        if ctx.early_stop is not None:
            desc["early_stop"] = ctx.early_stop.describe()
    return StepOutcome(module, desc, with_input_size(model, size))


def _check_resize(step: dict, where: str) -> None:
    if not (isinstance(step.get("size"), int) and 16 <= step["size"] <= 4096):
        raise UnsupportedError(f"{where}: resize needs an integer 'size' in 16..4096 (got {step.get('size')!r})", "e.g. size = 192")


def _apply_prune(ctx: StepContext, step: dict) -> StepOutcome:
    from edgefg.compress.prune import PruneOptions, prune
    from edgefg.compress.train import resolve_device

    s = STEPS["prune"]
    data = prune_batch(ctx.train_samples, ctx.model, ctx.opts.seed) if ctx.train_samples else None
    popts = PruneOptions(float(s.default(step, "ratio")), s.default(step, "round_to"), str(s.default(step, "importance")),
                         global_pruning=bool(s.default(step, "global")), bn_recalibrate=bool(s.default(step, "bn_recalibrate")))
    ctx.module.to(resolve_device(ctx.opts.device))
    try:
        desc = prune(ctx.module, ctx.model.preprocess.input_size, popts, data)
    finally:
        ctx.module.to("cpu")
    return StepOutcome(ctx.module, desc)


def _check_prune(step: dict, where: str) -> None:
    ratio = step.get("ratio", 0.3)
    if not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise UnsupportedError(f"{where}: prune ratio {ratio!r} is outside (0, 1)", "e.g. ratio = 0.3")


def _apply_train(ctx: StepContext, step: dict) -> StepOutcome:
    from edgefg.compress.train import train

    kind = step["type"]
    ctx.need_data(kind)
    cfg = train_config(step, ctx.opts, ctx.checkpoint(kind))
    distil = kind == "distil"
    watch = ctx.early_stop if distil else None
    res = train(ctx.module, ctx.train_samples, ctx.model.preprocess, cfg, teacher=ctx.teacher if distil else None, description=kind, on_epoch=watch)
    desc: dict[str, Any] = {"method": "distillation" if distil else "fine-tuning", "teacher": "the unpruned input model" if distil else None}
    if distil:
        desc.update(temperature=cfg.kd_temperature, alpha=cfg.kd_alpha, loss="alpha*T^2*KL(teacher||student) + (1-alpha)*CE")
    desc.update(train_description(cfg, res))
    if watch is not None:
        desc["early_stop"] = watch.describe()
    return StepOutcome(ctx.module, desc)


def _apply_tokens(ctx: StepContext, step: dict) -> StepOutcome:
    from edgefg.compress.tokens import TokenOptions, build_token_vit, describe
    from edgefg.compress.train import train

    s = STEPS["tokens"]
    topts = TokenOptions(float(s.default(step, "keep")), str(s.default(step, "method")), step.get("at"), bool(s.default(step, "clca")), step.get("recovery"))
    wrapped = build_token_vit(ctx.module, topts)
    desc = describe(wrapped, topts)
    if step.get("epochs"):
        ctx.need_data("tokens")
        cfg = train_config(step, ctx.opts, ctx.checkpoint("tokens"))
        res = train(wrapped, ctx.train_samples, ctx.model.preprocess, cfg, teacher=ctx.teacher, description="token fine-tune")
        desc.update(train_description(cfg, res), teacher="the input model without token reduction")
    return StepOutcome(wrapped, desc)


def _apply_ila(ctx: StepContext, step: dict) -> StepOutcome:
    from edgefg.compress.adapters import AdapterOptions, build_ila_vit, describe, trainable_prefixes
    from edgefg.compress.train import train

    s = STEPS["ila"]
    wrapped = build_ila_vit(ctx.module, AdapterOptions(tuple(s.default(step, "at")), int(s.default(step, "dim"))))
    desc = describe(wrapped)
    if s.default(step, "epochs"):
        ctx.need_data("ila")
        cfg = train_config(step, ctx.opts, ctx.checkpoint("ila"))
        res = train(wrapped, ctx.train_samples, ctx.model.preprocess, cfg, trainable=trainable_prefixes(wrapped), description="ILA adapters")
        desc.update(train_description(cfg, res))
    return StepOutcome(wrapped, desc)


def _int8_label(step: dict) -> str:
    if step.get("agreement_data") is not None:
        return "int8 (agreement-aware)"
    return "int8" + (" (accuracy-aware)" if step.get("max_drop") is not None or step.get("max_class_drop") is not None else "")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# int8 key → (check, what it must be); unlisted keys (ignored, agreement_data) are checked below
INT8_CHECKS: dict[str, tuple[Any, str]] = {
    "max_drop": (lambda v: _number(v) and v >= 0, "a number of points ≥ 0"),
    "max_class_drop": (_number, "a number of points"),
    "class_alpha": (lambda v: _number(v) and 0 < v, "a sign-test level > 0"),
    "class_gate": (lambda v: v in ("evidence", "points"), "evidence or points"),
    "smooth_quant": (_number, "a SmoothQuant alpha (0..1; negative = off)"),
    "max_reverts": (lambda v: _whole(v) and v >= 1, "an integer ≥ 1"),
    "min_agreement": (lambda v: _number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    "agreement_size": (lambda v: _whole(v) and v >= 1, "an integer ≥ 1"),
    "subset_size": (lambda v: _whole(v) and v >= 1, "an integer ≥ 1 (calibration images)"),
    "bias_correction": (lambda v: v in ("fast", "full", "off"), "one of fast, full, off"),
}


def check_int8_step(step: dict[str, Any], where: str = "recipe") -> None:
    """Types and ranges of the int8 step's keys, so a typo fails before any work."""
    for key, (ok, what) in INT8_CHECKS.items():
        if key in step and step[key] is not None and not ok(step[key]):
            raise UnsupportedError(f"{where}: int8 '{key}' must be {what} (got {step[key]!r})")
    if "agreement_data" in step and not isinstance(step["agreement_data"], (str, Path)):
        raise UnsupportedError(f"{where}: int8 'agreement_data' must be a folder path (got {step['agreement_data']!r})")
    if "ignored" in step and not (isinstance(step["ignored"], list) and all(isinstance(n, str) for n in step["ignored"])):
        raise UnsupportedError(f"{where}: int8 'ignored' must be a list of ONNX node names")
    for key in ("min_agreement", "agreement_size"):
        if step.get(key) is not None and step.get("agreement_data") is None:
            raise UnsupportedError(f"{where}: int8 '{key}' needs 'agreement_data' (a folder of unlabelled images)",
                                   "pass --agreement-data DIR or set agreement_data in the int8 step")


register(StepSpec(
    "resize", "input down-sampling to size×size, distilled from the full-resolution model (CNNs)",
    {"size": None, **TRAIN_KEYS, **KD_KEYS},
    label=lambda s: f"input {s['size']}px" + (" + KD" if s.get("epochs", 1) else ""),
    apply=_apply_resize, trains=lambda s: True, distils=lambda s: bool(s.get("epochs", 1)), check=_check_resize, position="first"))
register(StepSpec(
    "prune", "structured pruning (Torch-Pruning dependency groups; Taylor importance with data)",
    {"ratio": 0.3, "round_to": None, "importance": "auto", "global": False, "bn_recalibrate": True},
    label=lambda s: f"prune {s.get('ratio', 0.3):g}", apply=_apply_prune, check=_check_prune))
register(StepSpec(
    "distil", "knowledge distillation from the unchanged input model",
    {**TRAIN_KEYS, **KD_KEYS}, label=lambda s: "distil", apply=_apply_train, trains=lambda s: True, distils=lambda s: True))
register(StepSpec(
    "finetune", "plain fine-tuning on the labelled images",
    dict(TRAIN_KEYS), label=lambda s: "finetune", apply=_apply_train, trains=lambda s: True))
register(StepSpec(
    "tokens", "ViT token reduction (EViT / ToMe), optionally with CLCA and a fine-tune",
    {"keep": 0.5, "method": "evit", "at": None, "clca": False, "recovery": None, **{**TRAIN_KEYS, "epochs": 0}},
    label=lambda s: f"{s.get('method', 'evit')} keep {s.get('keep', 0.5):g}" + (" + CLCA" if s.get("clca") else ""),
    apply=_apply_tokens, trains=lambda s: bool(s.get("epochs")), distils=lambda s: bool(s.get("epochs"))))
register(StepSpec(
    "ila", "ILA down-sampling inter-layer adapters on a frozen ViT",
    {"at": list(ILA_DEFAULT_AT), "dim": 8, **{**TRAIN_KEYS, "lr": 1e-3}},
    label=lambda s: f"ILA @ {','.join(str(a) for a in s.get('at', ILA_DEFAULT_AT))}", apply=_apply_ila, trains=lambda s: True))
register(StepSpec(
    "int8", "NNCF INT8 post-training quantization of the exported ONNX (accuracy-aware with a budget)",
    {"max_drop": None, "max_class_drop": None, "class_alpha": None, "class_gate": None, "smooth_quant": None, "ignored": None, "max_reverts": None,
     "agreement_data": None, "min_agreement": None, "agreement_size": None, "bias_correction": None, "subset_size": None},
    label=_int8_label, check=check_int8_step, position="last"))


def apply(ctx: StepContext, step: dict) -> StepOutcome:
    s = spec(step["type"])
    if s.apply is None:
        raise UnsupportedError(f"step '{s.name}' is not a PyTorch step")  # pragma: no cover - validated earlier
    return s.apply(ctx, step)


def step_keys() -> dict[str, set[str]]:
    return {name: set(s.keys) for name, s in STEPS.items()}


def torch_steps() -> tuple[str, ...]:
    return tuple(name for name, s in STEPS.items() if s.torch)
