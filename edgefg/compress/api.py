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
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefg.calibration.dataset import ImageSet, iter_batches, scan, stratified_subset
from edgefg.compress import steps as step_registry
from edgefg.compress.options import CompressOptions
from edgefg.compress.recipes import RECIPES, load_recipe, validate_steps
from edgefg.compress.report import write_compress_report
from edgefg.compress.steps import StepContext
from edgefg.converters.torch_to_onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, export_onnx_cached
from edgefg.errors import CheckFailed, DataError, UnsupportedError
from edgefg.manifest import PARITY_DIR, Manifest, TensorSpec, atomic_output_dir
from edgefg.models.loader import ARTIFACT_TORCH_DIR, LoadedModel
from edgefg.models.stats import onnx_stats
from edgefg.progress import track
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.timing import split_calls, time_interleaved
from edgefg.validate.metrics import class_drops, class_gate_summary, classification, parity, significant_drop_count, strip_arrays, worst_class_drop
from edgefg.versions import library_versions

if TYPE_CHECKING:
    from edgefg.compress.quantize import AccuracyBudget

log = logging.getLogger(__name__)

__all__ = ["CompressOptions", "CompressResult", "compress", "RECIPES"]
TRANSFORMER_ARCH = re.compile(r"vit|deit|beit|eva|swin|levit|cait|xcit|pit_|convit", re.I)
PARITY_SAMPLES = 32
FALLBACK_VAL_SIZE = 1000  # stratified images of --data scored when no --val-data is given
GRAPH_EDIT_STEPS = ("tokens", "ila")  # wrap the timm module: the artifact keeps the ViT's weights + the wrapper's options and tensors


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
    """The recipe's steps with the command-line options folded in: each registered step folds its own
    options (``StepSpec.options``/``plan``), in registration order; then the training options go into
    every step that trains."""
    name, steps = load_recipe(opts.recipe)
    plan = step_registry.Plan(name, steps)
    for spec in list(step_registry.STEPS.values()):
        spec.plan_options(plan, opts)
    step_registry.plan_training(plan, opts)
    return name, validate_steps(plan.steps, f"recipe '{name}'")


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


@dataclass
class _Inputs:
    """The run's images, read before any work: calibration (whose labelled images the training steps use),
    validation and agreement images; prepared again at a new input size (:meth:`prepare`)."""

    seed: int
    calib_samples: list
    skipped: list[Path]  # unreadable calibration images
    calib_x: np.ndarray | None
    train_samples: list
    val_set: ImageSet | None
    val_size: int | None
    val: _Val | None
    pre_check: Any = None
    agreement_min: float | None = None
    agreement: Any = None  # read here, or by the int8 step at the input size a resize step gave

    def prepare(self, model: LoadedModel) -> None:
        """The validation and calibration arrays at the model's (new) input size."""
        self.val = _preprocess_val(self.val_set, model, self.val_size, self.seed)
        calib = [b.x for b in iter_batches(self.calib_samples, model.preprocess, 64)]
        self.calib_x = np.concatenate(calib) if calib else None

    def sample(self, model: LoadedModel) -> np.ndarray:
        """One input to time the models on."""
        return self.calib_x[0] if self.calib_x is not None else _dummy(model)


@dataclass
class _Run:
    """A compress run in progress: the model as the steps leave it and what was measured so far."""

    model: LoadedModel  # the input model, or the one a resize step gave
    meter: _Meter
    work: Path  # the steps' ONNX files, removed before the artifact is written
    ref_scores: np.ndarray | None
    ref_m: dict | None
    rows: list[dict[str, Any]]
    module: Any
    current: Path  # the last exported ONNX
    scores: np.ndarray | None  # its scores on the validation images (after int8: the INT8 model's)
    descs: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    passed: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def compress(model: LoadedModel, out: str | Path, opts: CompressOptions) -> CompressResult:
    """Run the recipe and write the artifact. Raises :class:`CheckFailed` (after writing the
    artifact and its report with the best result found) when an accuracy budget is not met.

    The phases: plan the steps, check what they need, read the images; then, in the output folder,
    measure the input model, run the PyTorch steps, quantize and gate the ONNX, time every model and
    write the report, manifest and artifact; last, fail when a gate or an early stop did."""
    recipe, steps = plan_steps(opts)
    _check_before_work(model, opts, recipe, steps)
    inputs = _read_inputs(model, opts, steps)
    out = Path(out)
    ckpt_root = Path(opts.checkpoint_dir) if opts.checkpoint_dir else out.with_name(f".{out.name}.ckpt")
    torch_steps = [s for s in steps if step_registry.spec(s["type"]).torch]
    int8_step = next((s for s in steps if s["type"] == "int8"), None)
    with atomic_output_dir(out, opts.force) as tmp:
        run = _measure_reference(model, opts, inputs, tmp / ".steps")
        if torch_steps:
            _run_torch_steps(run, torch_steps, opts, inputs, ckpt_root)
            _save_torch_weights(run.module, run.model, torch_steps, tmp / ARTIFACT_TORCH_DIR)
        if int8_step is not None:
            _run_int8(run, int8_step, opts, inputs, tmp / "model.onnx")
        else:
            shutil.copy2(run.current, tmp / "model.onnx")
        _time_steps(run.meter.timed, run.rows, opts.latency_iters)
        report, manifest = _report(run, recipe, steps, opts, inputs, out.name)
        _write_artifact(tmp, run, report, manifest, opts, inputs)
    if opts.checkpoint_dir is None and ckpt_root.is_dir():
        shutil.rmtree(ckpt_root, ignore_errors=True)
    result = CompressResult(out, manifest, report, run.passed)
    _raise_if_failed(result)
    return result


def _check_before_work(model: LoadedModel, opts: CompressOptions, recipe: str, steps: list[dict[str, Any]]) -> None:
    """What the planned steps need of the model, the machine and the options, refused before any work."""
    torch_steps = [s for s in steps if step_registry.spec(s["type"]).torch]
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
        raise DataError(f"recipe '{recipe}' needs images", "pass --data DIR (an ImageFolder of your classes)")


def _read_inputs(model: LoadedModel, opts: CompressOptions, steps: list[dict[str, Any]]) -> _Inputs:
    """Scan and read the calibration and validation images (and the agreement images), check edgefg's
    preprocessing against timm's, and refuse what the steps' budgets need but the images do not give."""
    torch_steps = [s for s in steps if step_registry.spec(s["type"]).torch]
    int8_step = next((s for s in steps if s["type"] == "int8"), None)
    calib_set = scan(opts.data, model.labels) if opts.data else None
    val_set = scan(opts.val_data, model.labels) if opts.val_data else calib_set
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
    inputs = _Inputs(opts.seed, calib_samples, skipped, calib_x, train_samples, val_set, val_size, val, pre_check)
    if int8_step and int8_step.get("agreement_data") is not None:
        from edgefg.compress.agreement import DEFAULT_MIN_AGREEMENT, scan_unlabelled

        scan_unlabelled(int8_step["agreement_data"])  # a wrong path or an empty folder fails before any work
        inputs.agreement_min = float(int8_step.get("min_agreement", DEFAULT_MIN_AGREEMENT))
        if not any(s["type"] == "resize" for s in torch_steps):  # else: read at the new input size, by the int8 step
            inputs.agreement = _load_agreement(int8_step, model, opts.seed)
    return inputs


def _measure_reference(model: LoadedModel, opts: CompressOptions, inputs: _Inputs, work: Path) -> _Run:
    """The input model as ONNX (copied, or exported once), measured: the reference every step is compared with."""
    meter = _Meter(model, _resolve_backend(opts.eval_backend), inputs.sample(model), opts.latency_iters, inputs.val, opts.batch_size)
    (work / "ref").mkdir(parents=True)
    ref_onnx = work / "ref" / "model.onnx"
    if model.onnx_path is not None:
        shutil.copy2(model.onnx_path, ref_onnx)
    else:
        export_onnx_cached(model.module, model.preprocess.input_size, ref_onnx)  # the unchanged input model: exported once
    ref_stats, ref_lat, ref_scores = meter(ref_onnx, "fp32", "fp32 reference")
    ref_m = classification(ref_scores, inputs.val.y, model.labels) if inputs.val is not None else None
    return _Run(model, meter, work, ref_scores, ref_m, [_row("fp32 (reference)", ref_stats, ref_lat, ref_m, None)], model.module, ref_onnx, ref_scores)


def _run_torch_steps(run: _Run, torch_steps: list[dict[str, Any]], opts: CompressOptions, inputs: _Inputs, ckpt_root: Path) -> None:
    """Apply each PyTorch step in order (an early-stopping watch on each when asked), export the module
    after it and measure it."""
    needs_teacher = any(step_registry.spec(s["type"]).distils(s) for s in torch_steps)
    teacher = copy.deepcopy(run.model.module).eval() if needs_teacher else None
    for i, step in enumerate(torch_steps):
        watch = _early_stop(opts, inputs.val, run.ref_m)
        outcome = step_registry.apply(StepContext(i, run.module, teacher, run.model, inputs.train_samples, opts, ckpt_root, watch), step)
        if watch is not None and watch.stopped:
            run.passed = False
            run.extra["stopped_early"] = {"step": step["type"], **watch.stopped}
        run.module, desc = outcome.module, outcome.description
        if outcome.model is not None:  # a new input size: every array after it is prepared again
            run.model = outcome.model
            inputs.prepare(run.model)
            run.meter = _Meter(run.model, run.meter.backend, inputs.sample(run.model), opts.latency_iters, inputs.val, opts.batch_size, run.meter.timed)
        run.module.eval()
        (run.work / str(i)).mkdir()
        run.current = export_onnx(run.module, run.model.preprocess.input_size, run.work / str(i) / "model.onnx")
        if step["type"] in GRAPH_EDIT_STEPS:
            from edgefg.compress.tokens import check_runtimes, graph_ops

            desc["graph"] = graph_ops(run.current)
            desc["runtimes"] = check_runtimes(run.current, run.model.preprocess.input_size)
        stats, lat, run.scores = run.meter(run.current, "fp32", step["type"])
        m = classification(run.scores, inputs.val.y, run.model.labels) if inputs.val is not None else None
        run.rows.append(_row(step_registry.label(step), stats, lat, m, run.ref_m, opts.class_alpha))
        if step["type"] == "prune":  # one count in the whole report: the table's, on the exported ONNX (BatchNorm folded)
            for k in ("params", "macs"):
                desc[f"{k}_before"], desc[f"{k}_after"] = run.rows[-2].get(k), run.rows[-1].get(k)
            desc["counted_on"] = "the exported ONNX (BatchNorm folded into the convolutions), as in the table"
        run.descs.append({"step": step["type"], **desc})


def _run_int8(run: _Run, step: dict[str, Any], opts: CompressOptions, inputs: _Inputs, dest: Path) -> None:
    """Quantize the last ONNX to INT8 at ``dest`` (with an accuracy budget: NNCF's accuracy control and the
    per-class loop), measure it, and hold the budget on the report's own measurement too."""
    from edgefg.compress.quantize import AccuracyBudget, QuantOptions, quantize_onnx, quantize_with_budget

    model, val = run.model, inputs.val
    agreement = inputs.agreement
    if inputs.agreement_min is not None and agreement is None:
        agreement = _load_agreement(step, model, opts.seed)
    is_vit = bool(model.arch and TRANSFORMER_ARCH.search(model.arch)) if model.arch else has_attention(run.current)
    qopts = QuantOptions(transformer=is_vit, smooth_quant=step.get("smooth_quant"), ignored=list(step.get("ignored", [])),
                         bias_correction=str(step.get("bias_correction", "fast")))
    budget = AccuracyBudget(step.get("max_drop"), step.get("max_class_drop"), float(step.get("class_alpha", opts.class_alpha)),
                            max_reverts=step.get("max_reverts"), min_agreement=inputs.agreement_min,
                            class_gate=str(step.get("class_gate", opts.class_gate)))
    if budget.active:
        desc = quantize_with_budget(run.current, dest, inputs.calib_x, val.x if val else None, val.y if val else None, model.labels,
                                    budget, qopts, engine=run.meter.backend, agreement_x=agreement.x if agreement else None)
        if agreement is not None:
            desc.update(agreement_data=str(agreement.root), agreement_images_found=agreement.found,
                        agreement_skipped_corrupt=[str(p) for p in agreement.skipped], agreement_ignored_files=agreement.ignored)
        run.passed = bool(desc["passed"])
    else:
        desc = quantize_onnx(run.current, dest, inputs.calib_x, options=qopts)
    stats, lat, scores = run.meter(dest, "int8", "int8")
    m_int8 = classification(scores, val.y, model.labels) if val is not None else None
    row = _row(step_registry.label(step), stats, lat, m_int8, run.ref_m, opts.class_alpha)
    if m_int8 is not None:
        m_in = classification(run.scores, val.y, model.labels)
        row["top1_drop_vs_input"] = 100.0 * (m_in["top1"] - m_int8["top1"])
        if budget.active and not _gate_on_report(desc, budget, row, m_int8, m_in):
            run.passed = False
    run.rows.append(row)
    run.descs.append({"step": "int8", **desc})
    run.precision, run.scores = "int8", scores


def _gate_on_report(desc: dict[str, Any], budget: AccuracyBudget, row: dict[str, Any], m_int8: dict, m_in: dict) -> bool:
    """The budget must also hold on the report's own measurement (its backend, its images): False (and
    ``desc`` says so, with the classes over budget) when it does not."""
    from edgefg.compress.quantize import class_failures

    fails = class_failures(class_drops(m_int8, m_in), budget.max_class_drop, budget.class_alpha, budget.class_gate)
    over = budget.max_drop is not None and row["top1_drop_vs_input"] > budget.max_drop + 1e-9
    desc["passed_on_report_backend"] = not (fails or over)
    if fails or over:
        desc["passed"] = False
        known = {c["class"] for c in desc["classes_over_budget"]}
        desc["classes_over_budget"] += [{k: r.get(k) for k in ("class", "images", "drop_pts", "drop_images", "p_value", "p_adjusted")} for r in fails if r["class"] not in known]
        desc["top1_drop"] = max(desc["top1_drop"], row["top1_drop_vs_input"])
        return False
    return True


def _report(run: _Run, recipe: str, steps: list[dict[str, Any]], opts: CompressOptions, inputs: _Inputs, name: str) -> tuple[dict[str, Any], Manifest]:
    """The report (every step's row, the compression descriptions, the final model against the reference)
    and the artifact's manifest (with its accuracy when there were labelled validation images)."""
    model, val, calib_x, pre_check = run.model, inputs.val, inputs.calib_x, inputs.pre_check
    manifest = _manifest_for(model, name, run.precision, run.descs)
    report: dict[str, Any] = {
        "model": model.source,
        "recipe": recipe,
        "recipe_steps": steps,
        "calibration": {"data": str(opts.data) if opts.data else None, "images": 0 if calib_x is None else int(len(calib_x)), "skipped_corrupt": [str(p) for p in inputs.skipped]},
        "validation": {"data": str(val.root) if val else None, "images": int(len(val.y)) if val else 0,
                       "held_out": bool(opts.val_data)},
        "preprocess": {"manifest": dataclasses.asdict(model.preprocess), "overrides": model.source.get("preprocess_overrides", {}),
                       "check": pre_check.to_dict() if pre_check is not None else None},
        "latency_backend": f"{run.meter.backend} (host CPU, batch 1)",
        "latency_timing": "every step's model timed together in interleaved rounds ({} × {} calls each after warm-up); p50, spread as IQR".format(*split_calls(opts.latency_iters)),
        "steps": run.rows,
        "compression": run.descs,
        "passed": run.passed,
        **run.extra,
    }
    if val is not None:
        ref_m = run.ref_m
        cand_m = classification(run.scores, val.y, model.labels)
        drops = class_drops(cand_m, ref_m)
        report["top1_drop"] = 100.0 * (ref_m["top1"] - cand_m["top1"])
        report["worst_class_drop"] = worst_class_drop(drops)[0]
        report["class_drops"] = drops
        report["class_alpha"] = opts.class_alpha
        report["class_gate"] = class_gate_summary(drops, opts.class_alpha, opts.class_gate)
        report["agreement"] = parity(run.scores, run.ref_scores)["top1_agreement"]
        report["validation"]["skipped_corrupt"] = [str(p) for p in val.skipped]
        manifest.accuracy = {
            "data": str(val.root),
            **{k: v for k, v in strip_arrays(cand_m).items() if k != "per_class"},
            "reference_top1": ref_m["top1"],
            "top1_drop": report["top1_drop"],
            "worst_class_drop": report["worst_class_drop"],
        }
    return report, manifest


def _write_artifact(tmp: Path, run: _Run, report: dict[str, Any], manifest: Manifest, opts: CompressOptions, inputs: _Inputs) -> None:
    """Parity samples, the report (JSON, Markdown, plot) and the manifest beside the model; the steps' work files go."""
    if inputs.calib_x is not None:
        _save_parity_samples(tmp / PARITY_DIR, inputs.calib_samples, inputs.skipped)
    shutil.rmtree(run.work)
    write_compress_report(tmp, report, plot=opts.plot)
    manifest.record_files(tmp)
    manifest.save(tmp)


def _raise_if_failed(result: CompressResult) -> None:
    """After the artifact is written: an early stop or a budget not met is a failed check (exit 1)."""
    report, out = result.report, result.directory
    if report.get("stopped_early"):
        s = report["stopped_early"]
        raise CheckFailed(f"{s['step']} stopped early: {s['reason']}; the model so far is written to {out}",
                          "raise --early-stop-drop (or drop it to train every epoch), prune less, or train longer")
    if not result.passed:
        q = report["compression"][-1]
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
