"""Check an ONNX graph against what a given TensorRT release's ONNX parser and its explicit
quantization accept, before anything is copied to a device.

Rules (each issue names the node and the fix):
- ``opset``: the default-domain opset is above what the parser of that release reads;
- ``unsupported-op``: an operator missing from the release's support table (a data file,
  ``data/onnx_ops.toml``) or from a non-standard domain;
- ``dynamic-shape``: a graph input with a symbolic/unknown dimension (profiles with static shapes);
- ``qdq-dtype`` / ``qdq-zero-point``: Q/DQ that is not INT8 with zero point 0 (TensorRT has no UINT8 or
  asymmetric quantization);
- ``qdq-activation-per-channel``: per-channel scales on an activation (TensorRT: per-tensor only);
- ``qdq-weight-axis``: per-channel weight scales not on the output-channel axis (0 for Conv);
- ``qdq-unpaired``: a QuantizeLinear whose output feeds something other than DequantizeLinear;
- ``qdq-scale``: a scale that is not a positive constant;
- ``qdq-zero-point-missing``: a Q/DQ without its zero-point input where the release's parser needs all
  three inputs (8.x before 8.6: "This version of TensorRT requires 3 inputs for the DequantizeLinear operator");
- ``qdq-per-axis-opset``: per-axis Q/DQ (an ``axis`` or a vector scale) below opset 13, where ONNX has no axis;
- ``op-attribute``: attribute limits of the release (``limits`` in the table): Resize modes, TopK's K
  (constant, ≤ 3840, sorted), Einsum forms (no ellipsis, diagonal or broadcasting on 8.x).

Needs only ``onnx`` and numpy (imported lazily by the caller passing a ModelProto).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import TargetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPS_FILE = Path(__file__).parent / "data" / "onnx_ops.toml"
INT8_RANGE = (-128, 127)


@dataclass(frozen=True)
class OpTable:
    version: str  # the table entry used ("8.5", "10.3", ...)
    max_opset: int
    ops: frozenset[str]
    source: str
    qdq_requires_zero_point: bool = False
    limits: tuple[tuple[str, Any], ...] = ()

    def limit(self, name: str, default: Any = None) -> Any:
        return dict(self.limits).get(name, default)


@dataclass
class LintIssue:
    rule: str
    node: str
    message: str
    fix: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message} (fix: {self.fix})"


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".") if p != "")
    except ValueError:
        raise TargetError(f"TensorRT version '{text}' is not a version number", "write it as e.g. \"10.3\" in the target profile") from None


@cache
def _tables() -> dict[str, dict[str, Any]]:
    return tomllib.loads(OPS_FILE.read_text(encoding="utf-8"))["versions"]


def op_table(trt_version: str) -> OpTable:
    """The support table for ``trt_version``: its ``major.minor`` entry, else the newest entry of the
    same major that is not newer than it."""
    want = _version_tuple(trt_version)
    candidates = sorted(
        (_version_tuple(k), k) for k in _tables() if _version_tuple(k)[0] == want[0] and _version_tuple(k) <= want[:2]
    )
    if not candidates:
        known = ", ".join(sorted(_tables(), key=_version_tuple))
        raise TargetError(
            f"no ONNX operator table for TensorRT {trt_version}",
            f"known TensorRT lines: {known}; add one to {OPS_FILE.name} or set runtime.tensorrt in the profile to one of them",
        )
    key = candidates[-1][1]
    entry = _tables()[key]
    limits = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in entry.get("limits", {}).items()))
    return OpTable(key, int(entry["max_opset"]), frozenset(entry["ops"]), entry.get("source", ""),
                   bool(entry.get("qdq_requires_zero_point", False)), limits)


# -- graph helpers ------------------------------------------------------------------------------
def default_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


class GraphIndex:
    """Producers, consumers and constant values of a graph (initializers and Constant nodes)."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.model = model
        self.init = {i.name: i for i in g.initializer}
        self.const: dict[str, np.ndarray] = {}
        for name, t in self.init.items():
            self.const[name] = numpy_helper.to_array(t)
        for n in g.node:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self.const[n.output[0]] = numpy_helper.to_array(a.t)
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)

    def value(self, name: str) -> np.ndarray | None:
        return self.const.get(name)

    def is_weight(self, name: str) -> bool:
        """A constant tensor, directly or through QuantizeLinear of a constant."""
        if name in self.const:
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type == "QuantizeLinear" and p.input[0] in self.const


def attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def weight_axis(consumer, input_index: int, rank: int) -> int | None:
    """The output-channel axis of a weight tensor feeding ``consumer`` at ``input_index``."""
    op = consumer.op_type
    if op == "Conv" and input_index == 1:
        return 0
    if op == "ConvTranspose" and input_index == 1:
        return 1
    if op == "Gemm" and input_index == 1:
        return 0 if attr(consumer, "transB", 0) else 1
    if op == "MatMul" and input_index == 1:
        return rank - 1
    return None


def qdq_params(index: GraphIndex, node) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """(scale, zero_point, normalised axis) of a Q/DQ node; zero point None when absent."""
    scale = index.value(node.input[1]) if len(node.input) > 1 else None
    zp = index.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return scale, zp, int(attr(node, "axis", 1))


# -- the lint -----------------------------------------------------------------------------------
def lint(model, trt_version: str, static_shapes: bool = True) -> list[LintIssue]:
    """All issues that would stop (or silently change) a TensorRT ``trt_version`` engine build."""
    table = op_table(trt_version)
    issues: list[LintIssue] = []
    opset = default_opset(model)
    if opset > table.max_opset:
        issues.append(
            LintIssue(
                "opset",
                "<model>",
                f"opset {opset} is above {table.max_opset}, the highest TensorRT {trt_version}'s ONNX parser reads",
                f"down-convert with onnx.version_converter.convert_version(model, {table.max_opset}) (edgefg deploy does this)",
            )
        )
    g = model.graph
    init_names = {i.name for i in g.initializer}
    if static_shapes:
        for inp in g.input:
            if inp.name in init_names:
                continue
            dims = inp.type.tensor_type.shape.dim
            bad = [d.dim_param or "?" for d in dims if not (d.HasField("dim_value") and d.dim_value > 0)]
            if bad or not dims:
                issues.append(
                    LintIssue(
                        "dynamic-shape",
                        inp.name,
                        f"input '{inp.name}' has dynamic dimension(s) {', '.join(bad) or '(no shape)'}; the target builds static-shape engines",
                        "fix the batch to 1 (edgefg deploy does this; other batch sizes: a fixed shape in the ONNX)",
                    )
                )
    unsupported: dict[str, list[str]] = {}
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            unsupported.setdefault(f"{n.domain}::{n.op_type}", []).append(n.name or n.output[0])
        elif n.op_type not in table.ops:
            unsupported.setdefault(n.op_type, []).append(n.name or n.output[0])
    for op, nodes in sorted(unsupported.items()):
        more = f" (+{len(nodes) - 1} more)" if len(nodes) > 1 else ""
        issues.append(
            LintIssue(
                "unsupported-op",
                nodes[0],
                f"op {op} at node '{nodes[0]}'{more} is not supported by TensorRT {trt_version}'s ONNX parser",
                "export the model without it (e.g. timm exportable layers, another activation/op), or use a target with a newer TensorRT",
            )
        )
    index = GraphIndex(model)
    issues += _lint_qdq(index)
    issues += _lint_qdq_version(index, table, opset, trt_version)
    issues += _lint_attributes(index, table, trt_version)
    return issues


def _lint_qdq_version(index: GraphIndex, table: OpTable, opset: int, trt_version: str) -> list[LintIssue]:
    issues: list[LintIssue] = []
    for n in index.model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = n.name or n.output[0]
        if table.qdq_requires_zero_point and not (len(n.input) > 2 and n.input[2]):
            issues.append(LintIssue(
                "qdq-zero-point-missing", name,
                f"{n.op_type} '{name}' has no zero-point input; TensorRT {trt_version}'s ONNX parser requires all three inputs",
                "add an int8 zero point of 0 (edgefg deploy does this)",
            ))
        scale = index.value(n.input[1]) if len(n.input) > 1 else None
        per_axis = attr(n, "axis") is not None or (scale is not None and np.asarray(scale).size > 1)
        if per_axis and opset < 13:
            issues.append(LintIssue(
                "qdq-per-axis-opset", name,
                f"{n.op_type} '{name}' is per-axis, which ONNX defines only from opset 13 (this model: opset {opset})",
                "export the quantized model at opset >= 13",
            ))
    return issues


def _einsum_terms(equation: str) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    return lhs.split(","), rhs


def _lint_attributes(index: GraphIndex, table: OpTable, trt_version: str) -> list[LintIssue]:
    """The documented per-op restrictions of the release (the table's ``limits``)."""
    issues: list[LintIssue] = []
    lim = table.limit
    for n in index.model.graph.node:
        name = n.name or n.output[0]

        def add(message: str, fix: str) -> None:
            issues.append(LintIssue("op-attribute", name, f"{n.op_type} '{name}': {message} (TensorRT {trt_version})", fix))

        if n.op_type == "Resize":
            mode = attr(n, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            ctm = attr(n, "coordinate_transformation_mode", b"half_pixel")
            ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
            nearest = attr(n, "nearest_mode", b"round_prefer_floor")
            nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
            if lim("resize_modes") and mode not in lim("resize_modes"):
                add(f"mode '{mode}' is not supported (only {', '.join(lim('resize_modes'))})", "export with mode='linear' or 'nearest' (e.g. F.interpolate bilinear)")
            if lim("resize_coordinate_modes") and ctm not in lim("resize_coordinate_modes"):
                add(f"coordinate_transformation_mode '{ctm}' is not supported", f"use one of {', '.join(lim('resize_coordinate_modes'))}")
            if mode == "nearest" and lim("resize_nearest_modes") and nearest not in lim("resize_nearest_modes"):
                add(f"nearest_mode '{nearest}' is not supported", f"use one of {', '.join(lim('resize_nearest_modes'))}")
        elif n.op_type == "TopK":
            k = index.value(n.input[1]) if len(n.input) > 1 else None
            if k is None and lim("topk_k_constant"):
                add("K is not an initializer/constant", "export with a constant k")
            elif k is not None and lim("topk_max_k") and int(np.ravel(k)[0]) > int(lim("topk_max_k")):
                add(f"K = {int(np.ravel(k)[0])} is above TensorRT's limit of {lim('topk_max_k')}", "use a smaller k")
            if lim("topk_sorted_only") and attr(n, "sorted", 1) != 1:
                add("sorted=0 is not supported", "export with sorted=1")
        elif n.op_type == "Einsum":
            eq = attr(n, "equation", b"")
            eq = eq.decode() if isinstance(eq, bytes) else eq
            terms, out = _einsum_terms(eq)
            if lim("einsum_no_ellipsis") and "..." in eq:
                add(f"equation '{eq}' uses an ellipsis", "write the equation with explicit subscripts, or use MatMul/Transpose")
            if lim("einsum_no_diagonal") and any(len(set(t)) != len(t) for t in terms if "..." not in t):
                add(f"equation '{eq}' takes a diagonal (a repeated subscript)", "rewrite without diagonal terms")
            if lim("einsum_no_broadcast") and len(terms) > 1:
                dims: dict[str, set] = {}
                shapes = [_static_dims(index, i) for i in n.input]
                for t, shape in zip(terms, shapes):
                    if shape is None or len(shape) != len(t):
                        continue
                    for c, d in zip(t, shape):
                        dims.setdefault(c, set()).add(d)
                if any(len(v) > 1 and 1 in v for v in dims.values()):
                    add(f"equation '{eq}' broadcasts a size-1 dimension between inputs", "expand the inputs to the same sizes first")
    return issues


def _static_dims(index: GraphIndex, name: str) -> list[int] | None:
    if name in index.const:
        return list(index.const[name].shape)
    g = index.model.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.name == name and v.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
    return None


def _lint_qdq(index: GraphIndex) -> list[LintIssue]:
    issues: list[LintIssue] = []
    rewrite = "rewrite the Q/DQ as symmetric int8 (edgefg deploy --target jetson-... does this) or re-quantize with signed, symmetric, per-tensor activations"
    for n in index.model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = n.name or n.output[0]
        scale, zp, axis = qdq_params(index, n)
        if scale is None or not np.all(np.asarray(scale) > 0):
            issues.append(LintIssue("qdq-scale", name, f"{n.op_type} '{name}' has a scale that is not a positive constant", "use constant positive scales (initializers)"))
            continue
        data_dtype = None
        if n.op_type == "DequantizeLinear" and n.input[0] in index.const:
            data_dtype = index.const[n.input[0]].dtype
        if zp is None and data_dtype is None:
            issues.append(LintIssue("qdq-dtype", name, f"{n.op_type} '{name}' has no zero point, so its type defaults to uint8; TensorRT needs int8", rewrite))
        elif (zp is not None and zp.dtype != np.int8) or (data_dtype is not None and data_dtype != np.int8):
            dtype = zp.dtype if zp is not None else data_dtype
            issues.append(LintIssue("qdq-dtype", name, f"{n.op_type} '{name}' quantizes to {dtype}; TensorRT supports only int8 Q/DQ", rewrite))
        elif zp is not None and np.any(zp != 0):
            issues.append(LintIssue("qdq-zero-point", name, f"{n.op_type} '{name}' has a non-zero zero point; TensorRT needs symmetric (zero point 0) quantization", rewrite))
        if np.asarray(scale).size > 1:
            data = n.input[0]
            if not index.is_weight(data):
                issues.append(
                    LintIssue("qdq-activation-per-channel", name, f"{n.op_type} '{name}' quantizes an activation per channel; TensorRT supports per-tensor activation scales only", rewrite)
                )
            elif n.op_type == "DequantizeLinear":
                value = index.const.get(data)
                if value is None:
                    value = index.const.get(index.producer[data].input[0])
                rank = value.ndim
                for c in index.consumers.get(n.output[0], []):
                    want = weight_axis(c, list(c.input).index(n.output[0]), rank)
                    got = axis % rank
                    if want is not None and got != want:
                        issues.append(
                            LintIssue(
                                "qdq-weight-axis",
                                name,
                                f"per-channel weight scales of '{name}' are on axis {got}; {c.op_type} '{c.name}' needs its output-channel axis {want}",
                                "re-quantize these weights per output channel (edgefg deploy does this)",
                            )
                        )
        if n.op_type == "QuantizeLinear":
            for c in index.consumers.get(n.output[0], []):
                if c.op_type != "DequantizeLinear":
                    issues.append(
                        LintIssue("qdq-unpaired", name, f"QuantizeLinear '{name}' feeds {c.op_type} '{c.name}' directly; TensorRT needs each Q followed by DequantizeLinear", "insert the matching DequantizeLinear, or re-quantize with Q/DQ pairs")
                    )
    return issues


def raise_on_errors(issues: list[LintIssue], trt_version: str, target: str) -> None:
    """One clear TargetError for the lint errors (the first named in full, the rest counted by rule)."""
    errors = [i for i in issues if i.severity == "error"]
    if not errors:
        return
    first = errors[0]
    rest: dict[str, int] = {}
    for e in errors[1:]:
        rest[e.rule] = rest.get(e.rule, 0) + 1
    more = "; also " + ", ".join(f"{v}× {k}" for k, v in rest.items()) if rest else ""
    raise TargetError(
        f"the ONNX model is not ready for TensorRT {trt_version} ({target}): {first.message}{more}",
        first.fix,
    )
