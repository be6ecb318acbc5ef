"""``edgefg compress``: model → compressed ONNX artifact + manifest + report.

A recipe is an ordered list of steps (see :mod:`edgefg.compress.recipes`): PyTorch steps
(structured pruning, distillation, fine-tuning, ViT token reduction, ILA adapters) run in order on
the module, then an optional INT8 step runs on the exported ONNX. The artifact is an ONNX model
(FP32, or INT8 as Q/DQ) that every converter starts from. The report measures every step on the
user's data: size, parameters, MACs, host latency, top-1/top-5, per-class accuracy and the
worst-class drop, and plots accuracy against latency.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import ImageSet, iter_batches, scan, stratified_subset
from edgefg.compress import steps as step_registry
from edgefg.compress.recipes import RECIPES, load_recipe, validate_steps
from edgefg.compress.prune import prune_schedule
from edgefg.compress.steps import ILA_DEFAULT_AT, StepContext
from edgefg.compress.report import write_compress_report
from edgefg.converters.torch_to_onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, export_onnx_cached
from edgefg.errors import CheckFailed, DataError, UnsupportedError
from edgefg.manifest import PARITY_DIR, Manifest, TensorSpec, atomic_output_dir
from edgefg.models.loader import ARTIFACT_TORCH_DIR, LoadedModel
from edgefg.models.stats import onnx_stats
from edgefg.progress import track
from edgefg.runtime.model import LoadedBundle
from edgefg.runtime.timing import split_calls, time_interleaved
from edgefg.validate.metrics import class_drops, class_gate_summary, classification, parity, significant_drop_count, strip_arrays, worst_class_drop
from edgefg.versions import library_versions

log = logging.getLogger(__name__)

__all__ = ["CompressOptions", "CompressResult", "compress", "RECIPES"]
TRANSFORMER_ARCH = re.compile(r"vit|deit|beit|eva|swin|levit|cait|xcit|pit_|convit", re.I)
PARITY_SAMPLES = 32
FALLBACK_VAL_SIZE = 1000  # stratified images of --data scored when no --val-data is given
GRAPH_EDIT_STEPS = ("tokens", "ila")  # wrap the timm module: the artifact keeps the ViT's weights + the wrapper's options and tensors


@dataclass
class CompressOptions:
    recipe: str = "int8"  # built-in name or a .toml/.yaml recipe file
    data: Path | None = None  # calibration + training images (ImageFolder or flat)
    val_data: Path | None = None  # evaluation images; defaults to ``data``
    calib_size: int = 300
    seed: int = 0
    force: bool = False
    latency_iters: int = 30
    batch_size: int = 8  # evaluation batch
    val_size: int | None = None  # evaluate on a stratified subset of this many validation images
    eval_backend: str = "auto"  # auto (OpenVINO when installed) | onnxruntime | openvino
    # INT8 and its budget (applied to the recipe's int8 step)
    max_drop: float | None = None  # mean top-1 drop, points (NNCF accuracy control)
    max_class_drop: float | None = None  # per-class drop, points, counted only when significant
    class_alpha: float = 0.05  # Holm-corrected sign-test level for "significant"
    class_gate: str = "evidence"  # evidence | points (every drop over max_class_drop fails)
    early_stop_drop: float | None = None  # stop a distillation whose top-1 drop cannot come within this many points
    smooth_quant: float | None = None
    ignored: list[str] = field(default_factory=list)  # ONNX node names kept in float
    # agreement-driven INT8: NNCF's accuracy control by top-1 agreement with FP32 on unlabelled images
    agreement_data: Path | None = None
    min_agreement: float | None = None  # default 0.99 when agreement_data is given
    agreement_size: int | None = None  # images read from agreement_data (default 2000)
    max_reverts: int | None = None  # most layers reverted to float (NNCF iterations; per-class loop)
    bias_correction: str | None = None  # fast (default) | full | off
    # input down-sampling (a smaller square input, distilled from the full-resolution model)
    input_size: int | None = None
    # structured pruning + distillation
    prune: float | None = None
    prune_rounds: int = 1  # prune in this many rounds, distilling after each (--epochs: the total over the rounds)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7
    # ViT token reduction / CLCA
    token_keep: float | None = None
    token_method: str = "evit"
    token_at: list[int] | None = None
    clca: bool = False
    # ILA adapters
    adapters: str | None = None  # "ila"
    adapter_at: list[int] = field(default_factory=lambda: list(ILA_DEFAULT_AT))
    adapter_dim: int = 8
    # training (overrides the recipe's step values when given)
    epochs: int | None = None
    lr: float | None = None
    train_batch: int = 32
    max_steps: int | None = None
    optimizer: str = "adamw"
    device: str = "cpu"  # where training and gradient-based pruning run: cpu | cuda | cuda:N (bf16 autocast on CUDA)
    train_precision: str = "auto"  # auto (bf16 on CUDA, fp32 on the CPU) | bf16 (CUDA, or CPUs with AVX512-BF16/AMX) | fp32
    checkpoint_dir: Path | None = None  # default: <out>.ckpt beside the output, removed on success
    plot: bool = True
    check_preprocess: bool = True  # compare edgefg's inputs with timm's own transform before any work


@dataclass
class CompressResult:
    directory: Path
    manifest: Manifest
    report: dict[str, Any] = field(default_factory=dict)
    passed: bool = True


def has_attention(onnx_path: Path) -> bool:
    """True when the graph multiplies two activations (attention's Q·Kᵀ and P·V): NNCF's transformer
    model type then fits better than the CNN default. Used when the model came as ONNX (no arch name)."""
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    consts = {i.name for i in g.initializer}
    for n in g.node:  # topological order: a node fed only by constants (Constant, Transpose(W), ...) is one too
        if all(i in consts for i in n.input if i):
            consts.update(n.output)
    return any(n.op_type == "MatMul" and not (set(n.input) & consts) for n in g.node)


def plan_steps(opts: CompressOptions) -> tuple[str, list[dict[str, Any]]]:
    """The recipe's steps with the command-line options folded in."""
    name, steps = load_recipe(opts.recipe)
    torch_steps = [s for s in steps if step_registry.spec(s["type"]).torch]
    int8 = [s for s in steps if s["type"] == "int8"]  # the one ONNX-stage step
    if opts.input_size is not None:
        rs = next((s for s in torch_steps if s["type"] == "resize"), None)
        if rs is None:
            torch_steps.insert(0, {"type": "resize", "size": opts.input_size, "epochs": 1})
        else:
            rs["size"] = opts.input_size
    scheduled: list[dict[str, Any]] = []  # distil steps whose epochs the prune schedule split (not overridden by --epochs below)
    if opts.prune is not None:
        pr = next((s for s in torch_steps if s["type"] == "prune"), None)
        if pr is None:
            rounds = prune_schedule(opts.prune, opts.prune_rounds, opts.epochs if opts.prune_rounds > 1 else None)
            scheduled = [s for s in rounds if s["type"] == "distil"] if opts.prune_rounds > 1 else []
            torch_steps += rounds
        elif opts.prune_rounds > 1:
            raise UnsupportedError(f"--prune-rounds needs a recipe without prune steps (recipe '{name}' has its own)",
                                   "drop --prune-rounds, or use --recipe fp32 / int8 with --prune")
        else:
            pr["ratio"] = opts.prune
    elif opts.prune_rounds > 1:
        raise UnsupportedError("--prune-rounds needs --prune RATIO", "e.g. --prune 0.2 --prune-rounds 3 --epochs 40")
    if opts.token_keep is not None:
        st = {"type": "tokens", "keep": opts.token_keep, "method": opts.token_method, "clca": opts.clca}
        if opts.token_at:
            st["at"] = list(opts.token_at)
        if opts.clca:
            st["epochs"] = 1
        torch_steps.append(st)
    elif opts.clca:
        raise UnsupportedError("--clca needs token reduction", "add --token-keep RATE (e.g. 0.5)")
    if opts.adapters is not None:
        if opts.adapters != "ila":
            raise UnsupportedError(f"unknown adapter type '{opts.adapters}'", "supported: ila")
        torch_steps.append({"type": "ila", "at": list(opts.adapter_at), "dim": opts.adapter_dim, "epochs": 1})
    for s in torch_steps:
        if step_registry.spec(s["type"]).trains(s):
            if opts.epochs is not None and (s["type"] != "tokens" or s.get("clca")) and not any(s is d for d in scheduled):
                s["epochs"] = opts.epochs
            if opts.lr is not None:
                s["lr"] = opts.lr
            if opts.max_steps is not None:
                s["max_steps"] = opts.max_steps
    budget_flags = {"max_drop": opts.max_drop, "max_class_drop": opts.max_class_drop, "smooth_quant": opts.smooth_quant,
                    "agreement_data": str(opts.agreement_data) if opts.agreement_data is not None else None, "min_agreement": opts.min_agreement,
                    "agreement_size": opts.agreement_size, "max_reverts": opts.max_reverts, "bias_correction": opts.bias_correction}
    if any(v is not None for v in budget_flags.values()) or opts.ignored:
        if not int8:
            flags = ", ".join("--" + k.replace("_", "-") for k, v in budget_flags.items() if v is not None) or "--ignore"
            raise UnsupportedError(f"{flags} need(s) an int8 step; recipe '{name}' has none", "use --recipe int8")
        for k, v in budget_flags.items():
            if v is not None:
                int8[0][k] = v
        if opts.max_class_drop is not None:
            int8[0]["class_alpha"] = opts.class_alpha
            int8[0]["class_gate"] = opts.class_gate
        if opts.ignored:
            int8[0]["ignored"] = list(opts.ignored)
    return name, validate_steps(torch_steps + int8, f"recipe '{name}'")


def _manifest_for(model: LoadedModel, name: str, precision: str, steps: list[dict]) -> Manifest:
    h, w = model.preprocess.input_size
    return Manifest(
        name=name,
        kind="artifact",
        model_file="model.onnx",
        format="onnx",
        backend="onnxruntime",
        precision=precision,
        labels=list(model.labels),
        preprocess=model.preprocess,
        inputs=[TensorSpec(INPUT_NAME, ["batch", 3, h, w], "float32")],
        outputs=[TensorSpec(OUTPUT_NAME, ["batch", model.num_classes], "float32")],
        compression=steps,
        source=model.source,
        versions=library_versions(),
    )


def _resolve_backend(name: str) -> str:
    if name != "auto":
        return name
    try:
        import openvino  # noqa: F401

        return "openvino"
    except ModuleNotFoundError:
        return "onnxruntime"


@dataclass
class _Val:
    x: np.ndarray
    y: np.ndarray
    root: Path
    skipped: list[Path]


class _Meter:
    """Measures one ONNX file: static stats and scores on the validation arrays; its host latency
    (batch 1) is taken later, for every measured file together, by :func:`_time_steps`."""

    def __init__(self, model: LoadedModel, backend: str, sample: np.ndarray, iters: int, val: _Val | None, batch: int, timed: list | None = None):
        self.model, self.backend, self.sample, self.iters, self.val, self.batch = model, backend, sample, iters, val, batch
        self.timed = [] if timed is None else timed  # (onnx, manifest, sample) per measured file, shared across meters

    def __call__(self, onnx_path: Path, precision: str, what: str):
        manifest = _manifest_for(self.model, what, precision, [])
        manifest = dataclasses.replace(manifest, backend=self.backend, model_file=onnx_path.name)
        stats = onnx_stats(onnx_path)
        log.info("measuring %s (%s)", what, self.backend)
        scores = None
        if self.val is not None:
            with LoadedBundle(onnx_path.parent, verify=False, manifest=manifest) as m:
                scores = np.concatenate([m.scores(self.val.x[i : i + self.batch])
                                         for i in track(range(0, len(self.val.x), self.batch), f"scoring {what} on {len(self.val.x)} images")])
        self.timed.append((onnx_path, manifest, self.sample))
        return stats, {"p50": None, "p90": None, "slot": len(self.timed) - 1}, scores


def _time_steps(timed: list, rows: list[dict[str, Any]], iters: int) -> None:
    """Host latency of every row's model, timed together in interleaved rounds (the one timing helper
    that ``edgefg bench`` uses), so machine load hits every step alike; fills each row's latency."""
    rows = [r for r in rows if "_latency_slot" in r]
    entries = [timed[r.pop("_latency_slot")] for r in rows]
    bundles = [LoadedBundle(onnx.parent, verify=False, manifest=manifest) for onnx, manifest, _ in entries]
    try:
        rounds, per_round = split_calls(iters)
        lats = time_interleaved([lambda b=b, x=x[None]: b.scores(x) for b, (_, _, x) in zip(bundles, entries)], rounds, per_round)
    finally:
        for b in bundles:
            b.close()
    for row, lat in zip(rows, lats):
        row["latency_ms_p50"], row["latency_ms_p90"], row["latency_ms_iqr"] = lat["p50"], lat["p90"], lat["iqr"]


def _preprocess_val(val_set: ImageSet | None, model: LoadedModel, size: int | None, seed: int) -> _Val | None:
    if val_set is None or not val_set.labelled:
        return None
    samples = stratified_subset(val_set.samples, size, seed) if size else val_set.samples
    skipped: list[Path] = []
    xs, ys = [], []
    for b in track(iter_batches(samples, model.preprocess, 64, skipped), f"reading {len(samples)} validation images", -(-len(samples) // 64)):
        xs.append(b.x)
        ys.append(b.labels)
    if not xs:
        raise DataError(f"no readable validation images in '{val_set.root}'")
    return _Val(np.concatenate(xs), np.concatenate(ys), val_set.root, skipped)


def _early_stop(opts: CompressOptions, val: _Val | None, ref_m: dict | None):
    """A fresh early-stopping watch for one training step, when ``early_stop_drop`` is set."""
    if opts.early_stop_drop is None:
        return None
    from edgefg.compress.early_stop import EarlyStop

    return EarlyStop(opts.early_stop_drop, ref_m["top1"], val.x, val.y)


def compress(model: LoadedModel, out: str | Path, opts: CompressOptions) -> CompressResult:
    """Run the recipe and write the artifact. Raises :class:`CheckFailed` (after writing the
    artifact and its report with the best result found) when an accuracy budget is not met."""
    name_recipe, steps = plan_steps(opts)
    torch_steps = [s for s in steps if step_registry.spec(s["type"]).torch]
    int8_step = next((s for s in steps if s["type"] == "int8"), None)
    if torch_steps and model.module is None:
        raise UnsupportedError(
            f"steps {', '.join(s['type'] for s in torch_steps)} need a PyTorch model, not an ONNX file",
            "pass a timm hub folder or a checkpoint with --arch",
        )
    if any(s["type"] in ("tokens", "ila") for s in torch_steps):
        from edgefg.compress.tokens import check_vit

        check_vit(model.module)  # fail before any export/measurement work
    if torch_steps:
        from edgefg.compress.train import resolve_device, training_precision

        if opts.device != "cpu":
            resolve_device(opts.device)  # a missing GPU is an error before any work, not after the export
        training_precision(opts.train_precision, opts.device)  # bf16 on a CPU without it: refused before any work
    if steps and opts.data is None:
        raise DataError(f"recipe '{name_recipe}' needs images", "pass --data DIR (an ImageFolder of your classes)")
    calib_set = scan(opts.data, model.labels) if opts.data else None
    val_set = scan(opts.val_data, model.labels) if opts.val_data else calib_set
    backend = _resolve_backend(opts.eval_backend)

    calib_size = int(int8_step.get("subset_size", opts.calib_size)) if int8_step else opts.calib_size  # the recipe's subset_size wins
    calib_samples = stratified_subset(calib_set.samples, calib_size, opts.seed) if calib_set else []
    skipped: list[Path] = []
    calib = [b.x for b in track(iter_batches(calib_samples, model.preprocess, 64, skipped), f"reading {len(calib_samples)} calibration images",
                                -(-len(calib_samples) // 64))]
    calib_x = np.concatenate(calib) if calib else None
    if calib_set is not None and calib_x is None:
        raise DataError(f"no readable calibration images in '{opts.data}'")
    if calib_set is not None and calib_set.labelled:
        n_classes = len({s.label for s in calib_samples})
        log.info("calibration: %d images covering %d of %d classes", len(calib_x), n_classes, len(calib_set.classes))
    train_samples = calib_set.samples if calib_set is not None and calib_set.labelled else []
    pre_check = None
    if opts.check_preprocess:
        from edgefg.validate.preprocess_check import check_model

        pre_check = check_model(model, [s for s in calib_samples if s.path not in set(skipped)])
        if pre_check is not None:
            log.info("%s", pre_check.summary())
            pre_check.raise_if_failed()  # before any export, training or measurement
    val_size = opts.val_size
    if opts.val_data is None and val_set is not None and val_set.labelled:
        val_size = val_size or min(len(val_set.samples), FALLBACK_VAL_SIZE)
        log.warning("no --val-data: the report's accuracy is measured on %d of the --data images (calibration/training images, so it is "
                    "optimistic); pass --val-data DIR with held-out images", val_size)
    val = _preprocess_val(val_set, model, val_size, opts.seed)
    if opts.early_stop_drop is not None and (val is None or not any(step_registry.spec(s["type"]).trains(s) for s in torch_steps)):
        raise DataError("--early-stop-drop needs a training step (prune + distil, --input-size) and labelled validation images",
                        "pass --val-data DIR with one sub-folder per class, or drop --early-stop-drop")
    if int8_step and (int8_step.get("max_drop") is not None or int8_step.get("max_class_drop") is not None) and val is None:
        raise DataError("an accuracy budget needs labelled validation images", "pass --val-data DIR with one sub-folder per class")
    agreement_min = None
    if int8_step and int8_step.get("agreement_data") is not None:
        from edgefg.compress.agreement import DEFAULT_MIN_AGREEMENT, scan_unlabelled

        scan_unlabelled(int8_step["agreement_data"])  # a wrong path or an empty folder fails before any work
        agreement_min = float(int8_step.get("min_agreement", DEFAULT_MIN_AGREEMENT))
    agreement = None
    if agreement_min is not None and not any(s["type"] == "resize" for s in torch_steps):  # else: read at the new input size, later
        agreement = _load_agreement(int8_step, model, opts.seed)

    out = Path(out)
    name = out.name
    ckpt_root = Path(opts.checkpoint_dir) if opts.checkpoint_dir else out.with_name(f".{out.name}.ckpt")
    sample = calib_x[0] if calib_x is not None else _dummy(model)
    meter = _Meter(model, backend, sample, opts.latency_iters, val, opts.batch_size)
    passed = True
    with atomic_output_dir(out, opts.force) as tmp:
        work = tmp / ".steps"
        (work / "ref").mkdir(parents=True)
        ref_onnx = work / "ref" / "model.onnx"
        if model.onnx_path is not None:
            shutil.copy2(model.onnx_path, ref_onnx)
        else:
            export_onnx_cached(model.module, model.preprocess.input_size, ref_onnx)  # the unchanged input model: exported once
        ref_stats, ref_lat, ref_scores = meter(ref_onnx, "fp32", "fp32 reference")
        ref_m = classification(ref_scores, val.y, model.labels) if val is not None else None
        rows = [_row("fp32 (reference)", ref_stats, ref_lat, ref_m, None)]
        descs: list[dict[str, Any]] = []

        module, current, cur_scores = model.module, ref_onnx, ref_scores
        needs_teacher = any(step_registry.spec(s["type"]).distils(s) for s in torch_steps)
        teacher = copy.deepcopy(model.module).eval() if needs_teacher else None
        extra: dict[str, Any] = {}
        for i, step in enumerate(torch_steps):
            watch = _early_stop(opts, val, ref_m)
            outcome = step_registry.apply(StepContext(i, module, teacher, model, train_samples, opts, ckpt_root, watch), step)
            if watch is not None and watch.stopped:
                passed = False
                extra["stopped_early"] = {"step": step["type"], **watch.stopped}
            module, desc = outcome.module, outcome.description
            if outcome.model is not None:  # a new input size: every array after it is prepared again
                model = outcome.model
                val = _preprocess_val(val_set, model, val_size, opts.seed)
                calib = [b.x for b in iter_batches(calib_samples, model.preprocess, 64)]
                calib_x = np.concatenate(calib) if calib else None
                meter = _Meter(model, backend, calib_x[0] if calib_x is not None else _dummy(model), opts.latency_iters, val, opts.batch_size, meter.timed)
            module.eval()
            (work / str(i)).mkdir()
            current = export_onnx(module, model.preprocess.input_size, work / str(i) / "model.onnx")
            if step["type"] in GRAPH_EDIT_STEPS:
                from edgefg.compress.tokens import check_runtimes, graph_ops

                desc["graph"] = graph_ops(current)
                desc["runtimes"] = check_runtimes(current, model.preprocess.input_size)
            stats, lat, cur_scores = meter(current, "fp32", step["type"])
            rows.append(_row(step_registry.label(step), stats, lat, classification(cur_scores, val.y, model.labels) if val is not None else None, ref_m, opts.class_alpha))
            if step["type"] == "prune":  # one count in the whole report: the table's, on the exported ONNX (BatchNorm folded)
                for k in ("params", "macs"):
                    desc[f"{k}_before"], desc[f"{k}_after"] = rows[-2].get(k), rows[-1].get(k)
                desc["counted_on"] = "the exported ONNX (BatchNorm folded into the convolutions), as in the table"
            descs.append({"step": step["type"], **desc})
        if torch_steps:
            _save_torch_weights(module, model, torch_steps, tmp / ARTIFACT_TORCH_DIR)

        if int8_step is not None:
            from edgefg.compress.quantize import AccuracyBudget, QuantOptions, quantize_onnx, quantize_with_budget

            if agreement_min is not None and agreement is None:
                agreement = _load_agreement(int8_step, model, opts.seed)

            is_vit = bool(model.arch and TRANSFORMER_ARCH.search(model.arch)) if model.arch else has_attention(current)
            qopts = QuantOptions(transformer=is_vit, smooth_quant=int8_step.get("smooth_quant"), ignored=list(int8_step.get("ignored", [])),
                                 bias_correction=str(int8_step.get("bias_correction", "fast")))
            budget = AccuracyBudget(int8_step.get("max_drop"), int8_step.get("max_class_drop"), float(int8_step.get("class_alpha", opts.class_alpha)),
                                    max_reverts=int8_step.get("max_reverts"), min_agreement=agreement_min,
                                    class_gate=str(int8_step.get("class_gate", opts.class_gate)))
            if budget.active:
                desc = quantize_with_budget(current, tmp / "model.onnx", calib_x, val.x if val else None, val.y if val else None, model.labels,
                                            budget, qopts, engine=backend, agreement_x=agreement.x if agreement else None)
                if agreement is not None:
                    desc.update(agreement_data=str(agreement.root), agreement_images_found=agreement.found,
                                agreement_skipped_corrupt=[str(p) for p in agreement.skipped], agreement_ignored_files=agreement.ignored)
                passed = bool(desc["passed"])
            else:
                desc = quantize_onnx(current, tmp / "model.onnx", calib_x, options=qopts)
            stats, lat, scores = meter(tmp / "model.onnx", "int8", "int8")
            m_int8 = classification(scores, val.y, model.labels) if val is not None else None
            row = _row(step_registry.label(int8_step), stats, lat, m_int8, ref_m, opts.class_alpha)
            if m_int8 is not None:
                m_in = classification(cur_scores, val.y, model.labels)
                row["top1_drop_vs_input"] = 100.0 * (m_in["top1"] - m_int8["top1"])
                if budget.active:  # the gate must also hold on the report's own measurement
                    from edgefg.compress.quantize import class_failures

                    fails = class_failures(class_drops(m_int8, m_in), budget.max_class_drop, budget.class_alpha, budget.class_gate)
                    over = budget.max_drop is not None and row["top1_drop_vs_input"] > budget.max_drop + 1e-9
                    desc["passed_on_report_backend"] = not (fails or over)
                    if fails or over:
                        passed = desc["passed"] = False
                        known = {c["class"] for c in desc["classes_over_budget"]}
                        desc["classes_over_budget"] += [{k: r.get(k) for k in ("class", "images", "drop_pts", "drop_images", "p_value", "p_adjusted")} for r in fails if r["class"] not in known]
                        desc["top1_drop"] = max(desc["top1_drop"], row["top1_drop_vs_input"])
            rows.append(row)
            descs.append({"step": "int8", **desc})
            precision, scores_final = "int8", scores
        else:
            shutil.copy2(current, tmp / "model.onnx")
            precision, scores_final = "fp32", cur_scores

        _time_steps(meter.timed, rows, opts.latency_iters)
        manifest = _manifest_for(model, name, precision, descs)
        report: dict[str, Any] = {
            "model": model.source,
            "recipe": name_recipe,
            "recipe_steps": steps,
            "calibration": {"data": str(opts.data) if opts.data else None, "images": 0 if calib_x is None else int(len(calib_x)), "skipped_corrupt": [str(p) for p in skipped]},
            "validation": {"data": str(val.root) if val else None, "images": int(len(val.y)) if val else 0,
                           "held_out": bool(opts.val_data)},
            "preprocess": {"manifest": dataclasses.asdict(model.preprocess), "overrides": model.source.get("preprocess_overrides", {}),
                           "check": pre_check.to_dict() if pre_check is not None else None},
            "latency_backend": f"{backend} (host CPU, batch 1)",
            "latency_timing": "every step's model timed together in interleaved rounds ({} × {} calls each after warm-up); p50, spread as IQR".format(*split_calls(opts.latency_iters)),
            "steps": rows,
            "compression": descs,
            "passed": passed,
            **extra,
        }
        if val is not None:
            cand_m = classification(scores_final, val.y, model.labels)
            drops = class_drops(cand_m, ref_m)
            report["top1_drop"] = 100.0 * (ref_m["top1"] - cand_m["top1"])
            report["worst_class_drop"] = worst_class_drop(drops)[0]
            report["class_drops"] = drops
            report["class_alpha"] = opts.class_alpha
            report["class_gate"] = class_gate_summary(drops, opts.class_alpha, opts.class_gate)
            report["agreement"] = parity(scores_final, ref_scores)["top1_agreement"]
            report["validation"]["skipped_corrupt"] = [str(p) for p in val.skipped]
            manifest.accuracy = {
                "data": str(val.root),
                **{k: v for k, v in strip_arrays(cand_m).items() if k != "per_class"},
                "reference_top1": ref_m["top1"],
                "top1_drop": report["top1_drop"],
                "worst_class_drop": report["worst_class_drop"],
            }
        if calib_x is not None:
            _save_parity_samples(tmp / PARITY_DIR, calib_samples, skipped)
        shutil.rmtree(work)
        write_compress_report(tmp, report, plot=opts.plot)
        manifest.record_files(tmp)
        manifest.save(tmp)
    if opts.checkpoint_dir is None and ckpt_root.is_dir():
        shutil.rmtree(ckpt_root, ignore_errors=True)
    result = CompressResult(out, manifest, report, passed)
    if report.get("stopped_early"):
        s = report["stopped_early"]
        raise CheckFailed(f"{s['step']} stopped early: {s['reason']}; the model so far is written to {out}",
                          "raise --early-stop-drop (or drop it to train every epoch), prune less, or train longer")
    if not passed:
        q = descs[-1]
        over = ", ".join(f"{c['class']} −{c['drop_pts']:.1f} pt ({c['drop_images']} img, p={_p(c['p_value'])})" for c in q["classes_over_budget"][:3])
        parts = []
        if q.get("top1_drop") is not None:
            parts.append(f"top-1 drop {q['top1_drop']:.2f} pt (budget {q['budget']['max_drop']})")
        if q["budget"].get("min_agreement") is not None:
            parts.append(f"agreement with FP32 {q['agreement_with_fp32']:.4f} on {q['agreement_images']} unlabelled images (min {q['budget']['min_agreement']:g})")
        raise CheckFailed(
            "INT8 accuracy budget not met: " + "; ".join(parts)
            + (f"; classes over budget: {over}" if over else "")
            + f"; best result written to {out}",
            "raise --max-drop/--max-class-drop or --max-reverts, lower --min-agreement, add calibration images, or keep more layers in float (--ignore NODE)",
        )
    return result


def _save_torch_weights(module: Any, model: LoadedModel, torch_steps: list[dict], folder: Path) -> None:
    """Keep the compressed PyTorch model in the artifact (a timm hub folder, safetensors) so converters
    that start from PyTorch (litert-torch for TFLite) build from the pruned/distilled weights. After a
    graph edit (token reduction, adapters) ``module`` wraps the timm ViT: the hub folder holds the ViT
    (as fine-tuned), and the wrapper's options (JSON) and own tensors (safetensors) lie beside it."""
    from edgefg.compress.prune import pruned_shapes
    from edgefg.models.loader import save_graph_edit, save_hub_folder

    if not model.arch:
        return
    edited = any(s["type"] in GRAPH_EDIT_STEPS for s in torch_steps)
    base = module.vit if edited else module
    save_hub_folder(base, model, folder, pruned_shapes(base) if any(s["type"] == "prune" for s in torch_steps) else None)
    if edited:
        save_graph_edit(module, folder)


def _load_agreement(int8_step: dict, model: LoadedModel, seed: int):
    from edgefg.compress.agreement import DEFAULT_AGREEMENT_SIZE, load_unlabelled

    return load_unlabelled(int8_step["agreement_data"], model.preprocess, int(int8_step.get("agreement_size", DEFAULT_AGREEMENT_SIZE)), seed)


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _dummy(model: LoadedModel) -> np.ndarray:
    h, w = model.preprocess.input_size
    return np.random.default_rng(0).standard_normal((3, h, w)).astype(np.float32)


def _row(step: str, stats: dict, lat: dict, m: dict | None, ref_m: dict | None, alpha: float = 0.05) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, **stats, "latency_ms_p50": lat["p50"], "latency_ms_p90": lat["p90"]}
    if lat.get("slot") is not None:  # timed later with the other steps (_time_steps)
        row["_latency_slot"] = lat["slot"]
    if m is not None:
        row.update({k: m[k] for k in ("images", "top1", "top5", "worst_class_accuracy", "mean_class_accuracy")})
        if ref_m is not None:
            drops = class_drops(m, ref_m)
            row["top1_drop"] = 100.0 * (ref_m["top1"] - m["top1"])
            row["worst_class_drop"], row["worst_class"] = worst_class_drop(drops)
            row["significant_class_drops"] = significant_drop_count(drops, alpha)
    return row


def _save_parity_samples(folder: Path, samples, skipped: list[Path]) -> None:
    """Copy a few calibration images into the artifact so deploy can check parity without the data."""
    folder.mkdir()
    bad = set(skipped)
    kept = [s.path for s in samples if s.path not in bad][:PARITY_SAMPLES]
    for i, path in enumerate(kept):
        shutil.copy2(path, folder / f"{i:03d}{path.suffix.lower()}")
