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
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgefg.errors import MissingDependencyError, UnsupportedError
from edgefg.progress import activity, stdout_to_stderr, track
from edgefg.validate.metrics import class_failures  # noqa: F401  (one meaning of --max-class-drop, shared with validate)

log = logging.getLogger(__name__)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class QuantOptions:
    transformer: bool = False
    fast_bias_correction: bool = True
    smooth_quant: float | None = None  # SmoothQuant alpha for MatMuls; None = NNCF default, <0 = off
    ignored: list[str] = field(default_factory=list)  # node names kept in float from the start


@dataclass
class AccuracyBudget:
    max_drop: float | None = None  # mean top-1 drop, points
    max_class_drop: float | None = None  # per-class drop, points (only significant drops count)
    class_alpha: float = 0.05  # sign-test level for calling a class drop real
    max_reverts: int = 64  # most layers edgefg reverts for the per-class budget

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.max_class_drop is not None


def _imports():
    try:
        import nncf
        import onnx
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "nncf", "compress") from None
    return nncf, onnx


def _nncf_kwargs(nncf, n_calib: int, q: QuantOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=n_calib, fast_bias_correction=q.fast_bias_correction
    )
    if q.transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if q.smooth_quant is not None:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        alpha = float(q.smooth_quant)
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha, convolution=-1)
        )
    if q.ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(q.ignored), validate=False)
    return kwargs


def _describe(nncf, quantized, n_calib: int, q: QuantOptions) -> dict[str, Any]:
    return {
        "method": "int8-ptq",
        "library": f"nncf {nncf.__version__}",
        "calibration_images": int(n_calib),
        "preset": "performance",
        "model_type": "transformer" if q.transformer else "default",
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
    q = options or QuantOptions(transformer=transformer, fast_bias_correction=fast_bias_correction)
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(samples), lambda x: {input_name: x[None]})
    try:
        with activity(f"INT8 calibration (NNCF, {len(samples)} images)"), stdout_to_stderr():
            quantized = nncf.quantize(model, dataset, **_nncf_kwargs(nncf, len(samples), q))
    except Exception as exc:  # NNCF raises a variety of errors on graphs it cannot handle
        raise UnsupportedError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None
    onnx.save(quantized, str(dst))
    return _describe(nncf, quantized, len(samples), q)


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

    def _compile(self, model) -> Callable[[np.ndarray], np.ndarray]:
        data = model.SerializeToString()
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
        if self._key is not model:
            self._fn, self._key = self._compile(model), model
        return np.concatenate([self._fn(x[i : i + self.batch]) for i in range(0, len(x), self.batch)])


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


def quantize_with_budget(
    src: Path,
    dst: Path,
    calib_x: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    labels: Sequence[str],
    budget: AccuracyBudget,
    options: QuantOptions | None = None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Accuracy-controlled INT8; writes the best model found to ``dst`` and returns the step
    description with ``passed`` (False when the budget could not be met)."""
    nncf, onnx = _imports()
    from edgefg.validate.metrics import classification

    q = options or QuantOptions()
    reference = onnx.load(str(src))
    input_name = reference.graph.input[0].name
    runner = Runner(engine)
    ref_logits = runner.logits(reference, val_x)
    ref_m = classification(ref_logits, val_y, labels)
    calib = nncf.Dataset(list(calib_x), lambda x: {input_name: x[None]})
    kwargs = _nncf_kwargs(nncf, len(calib_x), q)

    if budget.max_drop is not None:
        val_items = list(range(len(val_x)))

        runs = [0]

        def validation_fn(model, items) -> tuple[float, list[float]]:
            idx = np.fromiter((int(i) for i in items), dtype=int)
            if len(idx) == 0:
                return 0.0, []
            hits = (runner.logits(model, val_x[idx]).argmax(1) == val_y[idx]).astype(float)
            runs[0] += 1
            note(f"validation run {runs[0]}: top-1 {100 * hits.mean():.2f} % on {len(idx)} images")
            return float(hits.mean()), hits.tolist()

        # NNCF feeds validation_fn the dataset's raw items (our indices) — batching is ours
        val = nncf.Dataset(val_items)
        try:
            with activity(f"NNCF accuracy control (top-1 drop ≤ {budget.max_drop:g} pt)") as note, stdout_to_stderr():
                quantized = nncf.quantize_with_accuracy_control(
                    reference, calib, val, validation_fn, max_drop=budget.max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE, **kwargs
                )
        except Exception as exc:
            raise UnsupportedError(f"NNCF accuracy control failed: {str(exc).splitlines()[0][:300]}") from None
        method = "int8-ptq-accuracy-control"
    else:
        try:
            with activity(f"INT8 calibration (NNCF, {len(calib_x)} images)"), stdout_to_stderr():
                quantized = nncf.quantize(reference, calib, **kwargs)
        except Exception as exc:
            raise UnsupportedError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None
        method = "int8-ptq"
    nncf_float = float_layers(quantized)

    logits, m, drops = _evaluate(runner, quantized, val_x, val_y, labels, ref_m)
    failing = class_failures(drops, budget.max_class_drop, budget.class_alpha)
    history = [_attempt(0, ref_m, m, failing)]
    best = (quantized, m, drops, failing)
    reverted: list[str] = []
    ranking: list[dict] = []
    if failing:
        ranking = rank_layers(runner, quantized, reference, val_x, val_y, ref_logits, failing, labels)
        order = [r["layer"] for r in ranking]
        k = 1
        while failing and k <= min(len(order), budget.max_reverts):
            cand = revert_layers(quantized, reference, order[:k])
            _, cm, cdrops = _evaluate(runner, cand, val_x, val_y, labels, ref_m)
            cfail = class_failures(cdrops, budget.max_class_drop, budget.class_alpha)
            history.append(_attempt(k, ref_m, cm, cfail))
            log.info("reverted %d layer(s) to float: %d class(es) still over budget", k, len(cfail))
            if (len(cfail), -cm["top1"]) <= (len(best[3]), -best[1]["top1"]):
                best, reverted = (cand, cm, cdrops, cfail), order[:k]
            failing = cfail
            if k == min(len(order), budget.max_reverts):
                break
            k = min(2 * k, len(order), budget.max_reverts)
    final, m, drops, failing = best
    top1_drop = 100.0 * (ref_m["top1"] - m["top1"])
    mean_ok = budget.max_drop is None or top1_drop <= budget.max_drop + 1e-9
    onnx.save(final, str(dst))
    desc = _describe(nncf, final, len(calib_x), q)
    desc.update(
        method=method,
        budget=asdict(budget),
        engine=runner.engine,
        top1_drop=top1_drop,
        worst_class=({k2: drops[0][k2] for k2 in ("class", "images", "drop_pts", "drop_images", "p_value")} if drops else None),
        classes_over_budget=[{k2: r[k2] for k2 in ("class", "images", "drop_pts", "drop_images", "p_value")} for r in failing],
        float_layers_nncf=nncf_float,
        float_layers_per_class=reverted,
        sensitivity=ranking[:10],
        attempts=history,
        passed=bool(mean_ok and not failing),
    )
    return desc


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
