"""INT8 post-training quantization of an ONNX model with NNCF (emits Q/DQ ONNX).

Two entry points:

* :func:`quantize_onnx` — plain NNCF PTQ;
* :func:`quantize_with_budget` — NNCF's accuracy control for the mean top-1 drop (``max_drop``),
  then edgefg's per-class budget: a class fails only when it lost more than ``max_class_drop``
  points *and* the paired sign test on its images says the loss is unlikely to be noise
  (p < ``class_alpha``). Failing classes make edgefg revert more layers to float, ranked by how
  much reverting each one alone brings the failing classes' outputs back to the float model's.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, UnsupportedError
from edgefg.progress import activity, stdout_to_stderr, track
from edgefg.validate.metrics import class_failures  # noqa: F401  (one meaning of --max-class-drop, shared with validate)

log = logging.getLogger(__name__)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


BIAS_CORRECTION = ("fast", "full", "off")


@dataclass
class QuantOptions:
    transformer: bool = False
    bias_correction: str = "fast"  # fast (NNCF FastBiasCorrection) | full (BiasCorrection: slower, layer by layer) | off
    # SmoothQuant alpha for MatMul/Gemm. ViTs: None = NNCF's default (0.95); CNNs: None = off, ≥ 0 smooths the
    # classifier head (NNCF applies SmoothQuant only to transformers, so edgefg runs it before quantizing); <0 = off
    smooth_quant: float | None = None
    ignored: list[str] = field(default_factory=list)  # node names kept in float from the start

    def __post_init__(self) -> None:
        if self.bias_correction not in BIAS_CORRECTION:
            raise UnsupportedError(f"bias_correction must be one of {', '.join(BIAS_CORRECTION)} (got {self.bias_correction!r})")


@dataclass
class AccuracyBudget:
    max_drop: float | None = None  # mean top-1 drop on labelled images, points
    max_class_drop: float | None = None  # per-class drop, points (only significant drops count)
    class_alpha: float = 0.05  # sign-test level for calling a class drop real
    # most layers reverted to float: NNCF accuracy control's iterations (max_num_iterations, one group of
    # quantizers each) and, separately, edgefg's per-class loop (default 64 there, unbounded in NNCF)
    max_reverts: int | None = None
    min_agreement: float | None = None  # top-1 agreement with FP32 on unlabelled images (drives NNCF when set)
    class_gate: str = "evidence"  # evidence: over max_class_drop AND significant; points: every drop over it

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.max_class_drop is not None or self.min_agreement is not None


def _imports():
    try:
        import nncf
        import onnx
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "nncf", "compress") from None
    return nncf, onnx


def _nncf_kwargs(nncf, n_calib: int, q: QuantOptions, accuracy_control: bool = False) -> dict[str, Any]:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    kwargs: dict[str, Any] = dict(
        preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=n_calib, fast_bias_correction=q.bias_correction != "full"
    )
    advanced: dict[str, Any] = {}
    if q.bias_correction == "off":
        advanced["disable_bias_correction"] = True
    if q.transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if q.smooth_quant is not None:
            advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=float(q.smooth_quant), convolution=-1)
    if advanced:  # the two NNCF entry points name this argument differently
        kwargs["advanced_quantization_parameters" if accuracy_control else "advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    if q.ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(q.ignored), validate=False)
    return kwargs


def smooth_cnn_head(nncf, model, calib, n_calib: int, alpha: float):
    """NNCF's SmoothQuant on a CNN's MatMul/Gemm layers (the classifier head): per-channel scales move
    activation outliers into the weights (an inserted Mul; the float model computes the same function).
    ``nncf.quantize`` runs SmoothQuant only for ``ModelType.TRANSFORMER``, so edgefg runs the algorithm
    itself, through NNCF's own pipeline, before quantizing."""
    from nncf.quantization.algorithms.pipeline import Pipeline
    from nncf.quantization.algorithms.smooth_quant.algorithm import SmoothQuant

    with activity(f"SmoothQuant on the classifier head (alpha {alpha:g})"), stdout_to_stderr():
        return Pipeline([[SmoothQuant(n_calib, False, alpha_map={"convolution": -1, "matmul": float(alpha)})]]).run(model, calib)


def _prepare(nncf, model, calib, n_calib: int, q: QuantOptions):
    """The FP32 model NNCF quantizes: SmoothQuant-ed on its head first when asked for a CNN."""
    if q.transformer or q.smooth_quant is None or q.smooth_quant < 0:
        return model, 0
    before = sum(1 for n in model.graph.node if n.op_type == "Mul")
    try:
        smoothed = smooth_cnn_head(nncf, model, calib, n_calib, q.smooth_quant)
    except Exception as exc:
        raise UnsupportedError(f"NNCF SmoothQuant failed on this model: {str(exc).splitlines()[0][:300]}", "drop smooth_quant") from None
    return smoothed, sum(1 for n in smoothed.graph.node if n.op_type == "Mul") - before


def _describe(nncf, quantized, n_calib: int, q: QuantOptions) -> dict[str, Any]:
    return {
        "method": "int8-ptq",
        "library": f"nncf {nncf.__version__}",
        "calibration_images": int(n_calib),
        "preset": "performance",
        "model_type": "transformer" if q.transformer else "default",
        "bias_correction": q.bias_correction,
        "smooth_quant": q.smooth_quant,
        "quantize_nodes": sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear"),
        "float_layers": float_layers(quantized),
        "format": "onnx-qdq",
    }


def quantize_onnx(
    src: Path, dst: Path, samples: np.ndarray, transformer: bool = False, fast_bias_correction: bool = True, options: QuantOptions | None = None
) -> dict:
    """Quantize ``src`` to INT8 with calibration ``samples`` (preprocessed N×… array); save ``dst``.

    Returns a description of the step for the manifest/report.
    """
    nncf, onnx = _imports()
    q = options or QuantOptions(transformer=transformer, bias_correction="fast" if fast_bias_correction else "full")
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(samples), lambda x: {input_name: x[None]})
    t0 = time.perf_counter()
    model, smoothed = _prepare(nncf, model, dataset, len(samples), q)
    try:
        with activity(f"INT8 calibration (NNCF, {len(samples)} images)"), stdout_to_stderr():
            quantized = nncf.quantize(model, dataset, **_nncf_kwargs(nncf, len(samples), q))
    except Exception as exc:  # NNCF raises a variety of errors on graphs it cannot handle
        raise UnsupportedError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None
    seconds = time.perf_counter() - t0
    onnx.save(quantized, str(dst))
    desc = _describe(nncf, quantized, len(samples), q)
    desc["seconds"] = round(seconds, 1)  # SmoothQuant + calibration + bias correction (the quantizer options' cost)
    if smoothed:
        desc["smooth_quant_scales"] = smoothed
    return desc


# ---------------------------------------------------------------------------------------------
# Inference of in-memory ONNX models (OpenVINO when installed — fast INT8 — else ONNX Runtime)


class Runner:
    """Logits of an ONNX ``ModelProto`` on preprocessed arrays, with a one-model compile cache."""

    def __init__(self, engine: str = "auto", batch: int = 32):
        if engine == "auto":
            try:
                import openvino  # noqa: F401

                engine = "openvino"
            except ModuleNotFoundError:
                engine = "onnxruntime"
        self.engine, self.batch = engine, batch
        self._key: Any = None
        self._fn: Callable[[np.ndarray], np.ndarray] | None = None

    def _compile(self, data: bytes) -> Callable[[np.ndarray], np.ndarray]:
        if self.engine == "openvino":
            import openvino as ov

            core = ov.Core()
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "m.onnx"
                path.write_bytes(data)
                compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()

            def run(x: np.ndarray) -> np.ndarray:
                request.infer({0: x})
                return request.get_output_tensor(0).data.copy()

            return run
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]

    def logits(self, model, x: np.ndarray) -> np.ndarray:
        """Logits of ``model`` as it will be saved: weights NNCF still quantizes on the fly (QuantizeLinear
        on a constant) are folded to int8 first, as NNCF does to the model it returns — the accuracy
        control then judges the artifact's numerics. Cached by content: NNCF edits models in place."""
        data = model.SerializeToString()
        key = hashlib.blake2b(data, digest_size=16).digest()
        if self._key != key:
            self._fn, self._key = self._compile(_fold_weight_quantizers(model, data)), key
        return np.concatenate([self._fn(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])


def _fold_weight_quantizers(model, data: bytes) -> bytes:
    inits = {i.name for i in model.graph.initializer}
    if not any(n.op_type == "QuantizeLinear" and n.input and n.input[0] in inits for n in model.graph.node):
        return data
    try:
        from nncf.onnx.graph.passes import compress_quantize_weights_transformation
    except ImportError:  # pragma: no cover - NNCF moved it: score the unfolded model
        return data
    folded = copy.deepcopy(model)
    compress_quantize_weights_transformation(folded)
    return folded.SerializeToString()


# ---------------------------------------------------------------------------------------------
# Graph surgery: which layers are quantized, revert some to float


def _producers(model) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def quantized_layers(model) -> list[str]:
    """Names of weighted nodes (Conv/Gemm/MatMul) with a DequantizeLinear on an input."""
    prod = _producers(model)
    return [
        n.name
        for n in model.graph.node
        if n.op_type in WEIGHTED_OPS and any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input)
    ]


def float_layers(model) -> list[str]:
    """Weighted nodes that stay entirely in float (no Q/DQ on any input)."""
    q = set(quantized_layers(model))
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.name not in q]


def module_names(model, names: Sequence[str]) -> dict[str, str]:
    """The PyTorch module each ONNX node ``names`` came from (``node_Conv_1058`` →
    ``patch_embed.backbone.blocks.0.0.conv_dw``): the parameter name of its weight (``….weight``, which
    stays the convolution's when the exporter folds a BatchNorm into it), else the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` metadata (attention products have no weight). Nodes with neither
    (other exporters) are left out."""
    import ast

    inits = {i.name for i in model.graph.initializer}
    wanted, out = set(names), {}
    for n in model.graph.node:
        if n.name not in wanted:
            continue
        weights = [i for i in n.input if i in inits and i.endswith(".weight")]
        if weights:
            out[n.name] = weights[0][: -len(".weight")]
            continue
        meta = {p.key: p.value for p in n.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            continue
        modules = [s for s in scopes[:-1] if s]  # the last scope is the traced op itself (conv2d, matmul, ...)
        if modules:
            out[n.name] = modules[-1]
    return out


def revert_layers(quantized, reference, names: Sequence[str]):
    """A copy of ``quantized`` where nodes ``names`` read float inputs again (their Q/DQ pairs are
    bypassed; weights and biases come back from ``reference``, undoing bias correction)."""
    from onnx import numpy_helper

    model = copy.deepcopy(quantized)
    g = model.graph
    prod = _producers(model)
    inits = {i.name: i for i in g.initializer}
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    wanted = set(names)
    for node in g.node:
        if node.name not in wanted:
            continue
        ref = ref_nodes.get(node.name)
        for k, inp in enumerate(node.input):
            dq = prod.get(inp)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = prod.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[k] = q.input[0]
                elif ref is not None and k < len(ref.input) and ref.input[k] in ref_inits:
                    node.input[k] = ref.input[k]  # weights stored as int8: take the float original
                    if ref.input[k] not in inits:
                        g.initializer.append(ref_inits[ref.input[k]])
                        inits[ref.input[k]] = ref_inits[ref.input[k]]
        # bias (and any other float initializer NNCF rewrote): restore the reference value
        if ref is not None:
            for k, inp in enumerate(node.input):
                if inp in inits and k < len(ref.input) and ref.input[k] in ref_inits and inp == ref.input[k]:
                    arr = numpy_helper.to_array(ref_inits[inp])
                    inits[inp].CopyFrom(numpy_helper.from_array(arr, inp))
    _prune_dead(model)
    return model


def _prune_dead(model) -> None:
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


# ---------------------------------------------------------------------------------------------
# Accuracy-aware quantization


def _evaluate(runner: Runner, model, val_x, val_y, labels, ref_m):
    from edgefg.validate.metrics import class_drops, classification

    logits = runner.logits(model, val_x)
    m = classification(logits, val_y, labels)
    return logits, m, class_drops(m, ref_m)


def _restorer(budget: AccuracyBudget, intermediate_dir: str):
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    # one ranking worker: the validation functions share one compiled-model cache (and the CPU)
    extra = {} if budget.max_reverts is None else {"max_num_iterations": int(budget.max_reverts)}
    return AdvancedAccuracyRestorerParameters(num_ranking_workers=1, intermediate_model_dir=intermediate_dir, **extra)


def _accuracy_control(nncf, onnx, reference, calib, n_items: int, validation_fn, max_drop: float, budget: AccuracyBudget,
                      kwargs: dict, title: str):
    """NNCF's accuracy control with ``validation_fn`` on items 0..n-1; returns (final, plain INT8) models."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with activity(title) as note, stdout_to_stderr():
                validation_fn.note = note
                quantized = nncf.quantize_with_accuracy_control(
                    reference, calib, nncf.Dataset(list(range(n_items))), validation_fn, max_drop=max_drop,
                    drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=_restorer(budget, tmp), **kwargs
                )
        except Exception as exc:
            raise UnsupportedError(f"NNCF accuracy control failed: {str(exc).splitlines()[0][:300]}") from None
        plain = onnx.load(str(Path(tmp) / "intermediate_model.onnx"))
    return quantized, plain


class _LabelledTop1:
    """``validation_fn`` on labelled images: top-1 (per image 1/0). NNCF feeds it indices; batching is ours."""

    def __init__(self, runner: Runner, x: np.ndarray, y: np.ndarray):
        self.runner, self.x, self.y, self.runs = runner, x, y, 0
        self.note: Callable[[str], None] = lambda s: None

    def __call__(self, model, items) -> tuple[float, list[float]]:
        idx = np.fromiter((int(i) for i in items), dtype=int)
        if len(idx) == 0:
            return 0.0, []
        hits = (self.runner.logits(model, self.x[idx]).argmax(1) == self.y[idx]).astype(float)
        self.runs += 1
        self.note(f"validation run {self.runs}: top-1 {100 * hits.mean():.2f} % on {len(idx)} images")
        return float(hits.mean()), hits.tolist()


def quantize_with_budget(
    src: Path,
    dst: Path,
    calib_x: np.ndarray,
    val_x: np.ndarray | None,
    val_y: np.ndarray | None,
    labels: Sequence[str],
    budget: AccuracyBudget,
    options: QuantOptions | None = None,
    engine: str = "auto",
    agreement_x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy-controlled INT8; writes the best model found to ``dst`` and returns the step
    description with ``passed`` (False when the budget could not be met).

    With ``budget.min_agreement`` (and unlabelled ``agreement_x``) NNCF's accuracy control ranks and
    reverts quantizers by top-1 agreement with the FP32 model on those images (no labels); the
    labelled ``val_x``/``val_y`` (optional then) still gate ``max_drop`` and the per-class budget.
    Without it, NNCF's control uses top-1 on the labelled images against ``max_drop``."""
    nncf, onnx = _imports()
    from edgefg.compress.agreement import AgreementMetric, agreement_stats
    from edgefg.validate.metrics import classification

    q = options or QuantOptions()
    labelled = val_x is not None and val_y is not None
    if budget.min_agreement is not None and (agreement_x is None or not len(agreement_x)):
        raise UnsupportedError("min_agreement needs unlabelled agreement images", "pass --agreement-data DIR")
    if not labelled and (budget.max_drop is not None or budget.max_class_drop is not None):
        raise UnsupportedError("max_drop/max_class_drop need labelled validation images", "pass --val-data DIR")
    reference = onnx.load(str(src))
    input_name = reference.graph.input[0].name
    t0 = time.perf_counter()
    runner = Runner(engine)
    calib = nncf.Dataset(list(calib_x), lambda x: {input_name: x[None]})
    reference, smoothed = _prepare(nncf, reference, calib, len(calib_x), q)
    ref_logits = runner.logits(reference, val_x) if labelled else None
    ref_m = classification(ref_logits, val_y, labels) if labelled else None
    kwargs = _nncf_kwargs(nncf, len(calib_x), q, accuracy_control=True)
    agreement = None
    plain = None
    if budget.min_agreement is not None:
        agreement = AgreementMetric(runner.logits, reference, agreement_x)
        quantized, plain = _accuracy_control(
            nncf, onnx, reference, calib, len(agreement_x), agreement, agreement.max_drop(budget.min_agreement), budget, kwargs,
            f"NNCF accuracy control (agreement with FP32 ≥ {budget.min_agreement:g} on {len(agreement_x)} unlabelled images)")
        method = "int8-ptq-agreement-control"
    elif budget.max_drop is not None:
        quantized, plain = _accuracy_control(
            nncf, onnx, reference, calib, len(val_x), _LabelledTop1(runner, val_x, val_y), budget.max_drop / 100.0, budget,
            kwargs, f"NNCF accuracy control (top-1 drop ≤ {budget.max_drop:g} pt)")
        method = "int8-ptq-accuracy-control"
    else:
        kwargs = _nncf_kwargs(nncf, len(calib_x), q)
        try:
            with activity(f"INT8 calibration (NNCF, {len(calib_x)} images)"), stdout_to_stderr():
                quantized = nncf.quantize(reference, calib, **kwargs)
        except Exception as exc:
            raise UnsupportedError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None
        method = "int8-ptq"
    nncf_float = float_layers(quantized)
    plain_float = set(float_layers(plain)) if plain is not None else set(nncf_float)
    plain_scores: dict[str, Any] = {}
    if labelled and plain is not None:  # NNCF's starting point: what the accuracy control bought
        _, pm, pdrops = _evaluate(runner, plain, val_x, val_y, labels, ref_m)
        plain_scores = {"plain_int8_top1": pm["top1"], "plain_int8_top1_drop": 100.0 * (ref_m["top1"] - pm["top1"]),
                        "plain_int8_worst_class": _worst(pdrops)}

    history: list[dict] = []
    best = (quantized, None, [], [])
    reverted: list[str] = []
    ranking: list[dict] = []
    failing: list[dict] = []
    if labelled:
        logits, m, drops = _evaluate(runner, quantized, val_x, val_y, labels, ref_m)
        failing = class_failures(drops, budget.max_class_drop, budget.class_alpha, budget.class_gate)
        history = [_attempt(0, ref_m, m, failing)]
        best = (quantized, m, drops, failing)
    limit = 64 if budget.max_reverts is None else int(budget.max_reverts)
    if failing:
        ranking = rank_layers(runner, quantized, reference, val_x, val_y, ref_logits, failing, labels)
        order = [r["layer"] for r in ranking]
        k = 1
        while failing and k <= min(len(order), limit):
            cand = revert_layers(quantized, reference, order[:k])
            _, cm, cdrops = _evaluate(runner, cand, val_x, val_y, labels, ref_m)
            cfail = class_failures(cdrops, budget.max_class_drop, budget.class_alpha, budget.class_gate)
            history.append(_attempt(k, ref_m, cm, cfail))
            log.info("reverted %d layer(s) to float: %d class(es) still over budget", k, len(cfail))
            if (len(cfail), -cm["top1"]) <= (len(best[3]), -best[1]["top1"]):
                best, reverted = (cand, cm, cdrops, cfail), order[:k]
            failing = cfail
            if k == min(len(order), limit):
                break
            k = min(2 * k, len(order), limit)
    final, m, drops, failing = best
    top1_drop = 100.0 * (ref_m["top1"] - m["top1"]) if labelled else None
    mean_ok = budget.max_drop is None or (top1_drop is not None and top1_drop <= budget.max_drop + 1e-9)
    seconds = time.perf_counter() - t0
    onnx.save(final, str(dst))
    desc = _describe(nncf, final, len(calib_x), q)
    desc["seconds"] = round(seconds, 1)  # quantization + accuracy control + per-class loop
    if smoothed:
        desc["smooth_quant_scales"] = smoothed
    agree_ok = True
    if agreement is not None:
        got = agreement_stats(runner.logits(final, agreement_x), agreement.ref_logits)
        start = agreement_stats(runner.logits(plain, agreement_x), agreement.ref_logits) if plain is not None else None
        agree_ok = got["agreement"] >= budget.min_agreement - 1e-12
        desc.update(
            agreement_images=int(len(agreement_x)),
            min_agreement=budget.min_agreement,
            agreement_with_fp32=got["agreement"],
            mean_kl_vs_fp32=got["mean_kl"],
            plain_int8_agreement_with_fp32=start["agreement"] if start else None,
            plain_int8_mean_kl_vs_fp32=start["mean_kl"] if start else None,
            validations=len(agreement.full_runs),
        )
    desc.update(
        method=method,
        budget=asdict(budget),
        engine=runner.engine,
        top1_drop=top1_drop,
        worst_class=_worst(drops),
        classes_over_budget=[{k2: r.get(k2) for k2 in ("class", "images", "drop_pts", "drop_images", "p_value", "p_adjusted")} for r in failing],
        float_layers_nncf=nncf_float,  # every weighted layer without Q/DQ after NNCF (never quantized, or reverted)
        reverted_by_nncf=[n for n in nncf_float if n not in plain_float],  # what the accuracy control reverted
        float_layers_per_class=reverted,
        float_layer_modules=module_names(reference, [*nncf_float, *reverted]),  # node → PyTorch module, for the reader
        **plain_scores,
        sensitivity=ranking[:10],
        attempts=history,
        passed=bool(mean_ok and agree_ok and not failing),
    )
    return desc


def _worst(drops: list[dict]) -> dict | None:
    return {k: drops[0].get(k) for k in ("class", "images", "drop_pts", "drop_images", "p_value", "p_adjusted")} if drops else None


def _attempt(k: int, ref_m: dict, m: dict, failing: list[dict]) -> dict:
    return {"reverted": k, "top1": m["top1"], "top1_drop": 100.0 * (ref_m["top1"] - m["top1"]), "classes_over_budget": len(failing)}


def rank_layers(runner: Runner, quantized, reference, val_x, val_y, ref_logits, failing, labels, others: int = 64, seed: int = 0) -> list[dict]:
    """Per-layer sensitivity on the failing classes' images (plus a few others): how much reverting
    that layer alone brings the INT8 logits back towards the float ones (mean squared error)."""
    index = {name: i for i, name in enumerate(labels)}
    bad = np.isin(val_y, [index[r["class"]] for r in failing])
    rest = np.flatnonzero(~bad)
    rng = np.random.default_rng(seed)
    focus = np.concatenate([np.flatnonzero(bad), rng.choice(rest, min(others, len(rest)), replace=False)])
    x, ref = val_x[focus], ref_logits[focus]
    base = float(((runner.logits(quantized, x) - ref) ** 2).mean())
    rows = []
    for name in track(quantized_layers(quantized), "ranking layers for the per-class budget"):
        err = float(((runner.logits(revert_layers(quantized, reference, [name]), x) - ref) ** 2).mean())
        rows.append({"layer": name, "error_reduction": base - err})
    rows.sort(key=lambda r: -r["error_reduction"])
    return rows
