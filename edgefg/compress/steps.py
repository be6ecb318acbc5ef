"""The compress-step registry: one :class:`StepSpec` per step type.

Each step declares its recipe keys with their defaults, whether it trains (so ``--epochs/--lr/
--max-steps`` apply) and distils from the unchanged model, its report label, its ``edgefg compress``
options and how they fold into the recipe (``options``, ``plan``), and — for the PyTorch steps — the
function that applies it. Recipes (:mod:`edgefg.compress.recipes`), the ``compress`` command's options
(:class:`edgefg.compress.cli_options.CompressCommand`), ``plan_steps`` and the compress loop
(:mod:`edgefg.compress.api`) all read this table; a new step, with its flags, is one
``register(StepSpec(...))``, here or in the step's own module.

The ``int8`` step is registered too (keys, label) but applied by the compress loop itself: it
works on the exported ONNX, after every PyTorch step.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgefg.errors import DataError, UnsupportedError

if TYPE_CHECKING:
    from edgefg.compress.early_stop import EarlyStop
    from edgefg.compress.options import CompressOptions
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
    model: LoadedModel
    train_samples: list
    opts: CompressOptions
    checkpoint_root: Path
    early_stop: EarlyStop | None = None  # stop a distillation that cannot reach its budget (compress/early_stop.py)

    def need_data(self, kind: str) -> None:
        if not self.train_samples:
            raise DataError(f"step '{kind}' trains and needs labelled images", "pass --data DIR with one sub-folder per class")

    def checkpoint(self, kind: str) -> Path:
        return self.checkpoint_root / f"{self.index:02d}-{kind}"


@dataclass
class StepOutcome:
    module: Any
    description: dict[str, Any]
    model: LoadedModel | None = None  # a new LoadedModel when the step changes preprocessing (resize)


@dataclass(frozen=True)
class StepOption:
    """An ``edgefg compress`` option that a step reads: the click option, and the recipe key its value sets
    (``key``, by the default plan; None where the step's own ``plan`` reads the value), converted by ``to_step``."""

    param: click.Option
    key: str | None = None
    to_step: Callable[[Any], Any] = lambda value: value

    @property
    def name(self) -> str:  # the CompressOptions field (or ``CompressOptions.flags`` key) holding the value
        return str(self.param.name)

    @property
    def flag(self) -> str:
        return self.param.opts[0]


def option(*decls: str, key: str | None = None, to_step: Callable[[Any], Any] | None = None, **click_attrs: Any) -> StepOption:
    """A step's command-line option: ``decls`` and ``click_attrs`` as for ``click.option``."""
    return StepOption(click.Option(list(decls), **click_attrs), key, to_step or (lambda value: value))


@dataclass
class Plan:
    """A recipe's steps while :func:`edgefg.compress.api.plan_steps` folds the command-line options into them."""

    recipe: str
    steps: list[dict[str, Any]]
    epochs_fixed: list[dict[str, Any]] = field(default_factory=list)  # steps whose epochs a step's plan set: --epochs leaves them

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["type"] == kind]

    def add(self, step: dict[str, Any]) -> dict[str, Any]:
        """Add a step where its type goes: first (``position="first"``), after the other PyTorch steps, or last."""
        s = spec(step["type"])
        at = len(self.steps)
        if s.position == "first":
            at = 0
        elif s.torch:
            at = next((i for i, t in enumerate(self.steps) if not spec(t["type"]).torch), at)
        self.steps.insert(at, step)
        return step


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
    options: tuple[StepOption, ...] = ()  # its `edgefg compress` options (the command lists them after its own)
    plan: Callable[[Plan, CompressOptions], None] | None = None  # folds the options into the recipe; None: by their keys (plan_options)
    epochs_flag: Callable[[dict], bool] = lambda step: True  # whether --epochs sets this step's epochs when it trains

    @property
    def torch(self) -> bool:
        return self.apply is not None

    def default(self, step: dict, key: str) -> Any:
        return step.get(key, self.keys.get(key))

    def plan_options(self, plan: Plan, opts: CompressOptions) -> None:
        """Fold this step's options into the plan: its own ``plan``; else every given option with a ``key`` sets
        that key on the recipe's steps of this type, and a recipe without one gets one (:meth:`Plan.add`)."""
        if self.plan is not None:
            self.plan(plan, opts)
            return
        values = {o.key: o.to_step(v) for o in self.options if o.key is not None and given(v := option_value(opts, o))}
        if values:
            for step in plan.of(self.name) or [plan.add({"type": self.name})]:
                step.update(values)


STEPS: dict[str, StepSpec] = {}


def register(spec: StepSpec) -> StepSpec:
    if spec.name in STEPS:
        raise ValueError(f"compress step '{spec.name}' is registered twice")
    taken = {o.name: s.name for s in STEPS.values() for o in s.options}
    for o in spec.options:
        if o.name in taken:
            raise ValueError(f"compress step '{spec.name}': {o.flag} is already an option of step '{taken[o.name]}'")
    STEPS[spec.name] = spec
    return spec


def unregister(name: str) -> StepSpec:
    """Remove a step (and its command-line options) from the registry."""
    return STEPS.pop(name)


def spec(kind: str) -> StepSpec:
    try:
        return STEPS[kind]
    except KeyError:
        raise UnsupportedError(f"unknown step type '{kind}'", f"step types: {', '.join(STEPS)}") from None


def label(step: dict) -> str:
    return spec(step["type"]).label(step)


# -- the steps' command-line options ---------------------------------------------------------------


def cli_params() -> list[click.Option]:
    """Every registered step's ``edgefg compress`` options, in registration order."""
    return [o.param for s in STEPS.values() for o in s.options]


def option_value(opts: CompressOptions, opt: StepOption) -> Any:
    """A step option's value in a run's options: its CompressOptions field, else ``opts.flags`` (where the
    options of steps registered elsewhere go), else None (not given)."""
    if opt.name in {f.name for f in dataclasses.fields(opts)}:
        return getattr(opts, opt.name)
    return opts.flags.get(opt.name)


def given(value: Any) -> bool:
    """An option counts as given unless it is None, False (a flag not set) or empty (a repeatable option)."""
    return value is not None and value is not False and not (isinstance(value, (list, tuple)) and not value)


def plan_training(plan: Plan, opts: CompressOptions) -> None:
    """The training options (--epochs, --lr, --max-steps) into every PyTorch step that trains."""
    for step in plan.steps:
        s = spec(step["type"])
        if not (s.torch and s.trains(step)):
            continue
        if opts.epochs is not None and s.epochs_flag(step) and not any(step is d for d in plan.epochs_fixed):
            step["epochs"] = opts.epochs
        if opts.lr is not None:
            step["lr"] = opts.lr
        if opts.max_steps is not None:
            step["max_steps"] = opts.max_steps


def _ints(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("expected comma-separated block indices, e.g. 3,7") from None


# -- shared training plumbing ----------------------------------------------------------------------


def train_config(step: dict, opts: CompressOptions, ckpt: Path | None):
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


def prune_batch(samples, model: LoadedModel, seed: int, size: int = 128):
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


def _plan_resize(plan: Plan, opts: CompressOptions) -> None:
    if opts.input_size is None:
        return
    existing = plan.of("resize")
    if existing:
        existing[0]["size"] = opts.input_size
    else:
        plan.add({"type": "resize", "size": opts.input_size, "epochs": 1})


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


def _plan_prune(plan: Plan, opts: CompressOptions) -> None:
    """--prune: the recipe's prune step gets the ratio; a recipe without one gets prune + distil, in
    --prune-rounds rounds (whose distillations split --epochs among them)."""
    from edgefg.compress.prune import prune_schedule

    if opts.prune is None:
        if opts.prune_rounds > 1:
            raise UnsupportedError("--prune-rounds needs --prune RATIO", "e.g. --prune 0.2 --prune-rounds 3 --epochs 40")
        return
    existing = plan.of("prune")
    if not existing:
        rounds = prune_schedule(opts.prune, opts.prune_rounds, opts.epochs if opts.prune_rounds > 1 else None)
        for step in rounds:
            plan.add(step)
        if opts.prune_rounds > 1:
            plan.epochs_fixed += [s for s in rounds if s["type"] == "distil"]
    elif opts.prune_rounds > 1:
        raise UnsupportedError(f"--prune-rounds needs a recipe without prune steps (recipe '{plan.recipe}' has its own)",
                               "drop --prune-rounds, or use --recipe fp32 / int8 with --prune")
    else:
        existing[0]["ratio"] = opts.prune


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


def _plan_tokens(plan: Plan, opts: CompressOptions) -> None:
    if opts.token_keep is None:
        if opts.clca:
            raise UnsupportedError("--clca needs token reduction", "add --token-keep RATE (e.g. 0.5)")
        return
    step = {"type": "tokens", "keep": opts.token_keep, "method": opts.token_method, "clca": opts.clca}
    if opts.token_at:
        step["at"] = list(opts.token_at)
    if opts.clca:
        step["epochs"] = 1
    plan.add(step)


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


def _plan_ila(plan: Plan, opts: CompressOptions) -> None:
    if opts.adapters is None:
        return
    if opts.adapters != "ila":
        raise UnsupportedError(f"unknown adapter type '{opts.adapters}'", "supported: ila")
    plan.add({"type": "ila", "at": list(opts.adapter_at), "dim": opts.adapter_dim, "epochs": 1})


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


def _plan_int8(plan: Plan, opts: CompressOptions) -> None:
    """The budget and quantizer options set their keys on the recipe's int8 step (the per-class budget's
    --class-alpha/--class-gate with --max-class-drop); a recipe without one is refused."""
    options = STEPS["int8"].options
    values = {o.key: o.to_step(v) for o in options if given(v := option_value(opts, o))}
    if not values:
        return
    int8 = plan.of("int8")
    if not int8:
        flags = ", ".join(o.flag for o in options if o.key in values and o.key != "ignored") or "--ignore"
        raise UnsupportedError(f"{flags} need(s) an int8 step; recipe '{plan.recipe}' has none", "use --recipe int8")
    ignored = values.pop("ignored", None)
    int8[0].update(values)
    if opts.max_class_drop is not None:
        int8[0]["class_alpha"] = opts.class_alpha
        int8[0]["class_gate"] = opts.class_gate
    if ignored:
        int8[0]["ignored"] = ignored


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
    apply=_apply_resize, trains=lambda s: True, distils=lambda s: bool(s.get("epochs", 1)), check=_check_resize, position="first",
    options=(option("--input-size", type=click.IntRange(16, 4096),
                    help="Input down-sampling: the model takes SIZE×SIZE (e.g. 192), distilled from the full-resolution model (CNNs)."),),
    plan=_plan_resize))
register(StepSpec(
    "prune", "structured pruning (Torch-Pruning dependency groups; Taylor importance with data)",
    {"ratio": 0.3, "round_to": None, "importance": "auto", "global": False, "bn_recalibrate": True},
    label=lambda s: f"prune {s.get('ratio', 0.3):g}", apply=_apply_prune, check=_check_prune,
    options=(option("--prune", type=float, help="Structured pruning ratio (e.g. 0.3), followed by distillation from the unpruned model."),
             option("--prune-rounds", type=click.IntRange(1, 20), default=1, show_default=True,
                    help="Prune in N rounds (ratios compounding to --prune), distilling after each; --epochs is then the total "
                         "(a fifth after each intermediate round, the rest after the last).")),
    plan=_plan_prune))
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
    apply=_apply_tokens, trains=lambda s: bool(s.get("epochs")), distils=lambda s: bool(s.get("epochs")),
    epochs_flag=lambda s: bool(s.get("clca")),  # --epochs is the CLCA head's fine-tune; a recipe's own token fine-tune keeps its epochs
    options=(option("--token-keep", type=float, help="ViT token keep rate at each reduction block (e.g. 0.5)."),
             option("--token-method", type=click.Choice(["evit", "tome"]), default="evit", show_default=True),
             option("--token-at", callback=_ints, help="0-based blocks that reduce tokens (default ≈ depth/4, /2, 3/4)."),
             option("--clca", is_flag=True, help="Add the Cross-Layer Cache + Aggregation head (then fine-tune).")),
    plan=_plan_tokens))
register(StepSpec(
    "ila", "ILA down-sampling inter-layer adapters on a frozen ViT",
    {"at": list(ILA_DEFAULT_AT), "dim": 8, **{**TRAIN_KEYS, "lr": 1e-3}},
    label=lambda s: f"ILA @ {','.join(str(a) for a in s.get('at', ILA_DEFAULT_AT))}", apply=_apply_ila, trains=lambda s: True,
    options=(option("--adapters", type=click.Choice(["ila"]), help="Insert down-sampling inter-layer adapters (frozen backbone)."),
             option("--adapter-at", callback=_ints, default=",".join(map(str, ILA_DEFAULT_AT)), show_default=True, help="0-based blocks followed by an adapter."),
             option("--adapter-dim", type=int, default=8, show_default=True)),
    plan=_plan_ila))
register(StepSpec(
    "int8", "NNCF INT8 post-training quantization of the exported ONNX (accuracy-aware with a budget)",
    {"max_drop": None, "max_class_drop": None, "class_alpha": None, "class_gate": None, "smooth_quant": None, "ignored": None, "max_reverts": None,
     "agreement_data": None, "min_agreement": None, "agreement_size": None, "bias_correction": None, "subset_size": None},
    label=_int8_label, check=check_int8_step, position="last",
    options=(  # in this order in the "need(s) an int8 step" error
        option("--max-drop", type=float, key="max_drop",
               help="INT8 accuracy control: largest allowed top-1 drop in points (NNCF reverts layers to float)."),
        option("--max-class-drop", type=float, key="max_class_drop",
               help="Per-class budget in points; a class fails only if its drop is also significant (paired sign test, Holm-corrected over the classes)."),
        option("--smooth-quant", type=float, key="smooth_quant",
               help="SmoothQuant alpha for MatMul/Gemm: ViTs (default 0.95), CNNs their classifier head (default off); negative disables."),
        option("--agreement-data", type=click.Path(path_type=Path), key="agreement_data", to_step=str,
               help="Unlabelled images (any folder, searched recursively) the model was not trained on, e.g. camera frames: NNCF's accuracy control then keeps top-1 agreement with the FP32 model on them (no labels needed)."),
        option("--min-agreement", type=click.FloatRange(0, 1, min_open=True), key="min_agreement",
               help="With --agreement-data: smallest allowed top-1 agreement with FP32 (default 0.99); NNCF reverts layers to float until it holds."),
        option("--agreement-size", type=click.IntRange(1), key="agreement_size", help="Read at most N agreement images (a seeded random subset; default 2000)."),
        option("--max-reverts", type=click.IntRange(1), key="max_reverts",
               help="Accuracy control: most layers (quantizer groups) reverted to float, by NNCF and by the per-class budget each."),
        option("--bias-correction", type=click.Choice(["fast", "full", "off"]), key="bias_correction",
               help="INT8 bias correction: fast (NNCF default), full (BiasCorrection, layer by layer: slower) or off."),
        option("--ignore", "ignored", multiple=True, key="ignored", to_step=list, help="ONNX node name to keep in float (repeatable)."),
    ),
    plan=_plan_int8))


def apply(ctx: StepContext, step: dict) -> StepOutcome:
    s = spec(step["type"])
    if s.apply is None:
        raise UnsupportedError(f"step '{s.name}' is not a PyTorch step")  # pragma: no cover - validated earlier
    return s.apply(ctx, step)


def step_keys() -> dict[str, set[str]]:
    return {name: set(s.keys) for name, s in STEPS.items()}


def torch_steps() -> tuple[str, ...]:
    return tuple(name for name, s in STEPS.items() if s.torch)
