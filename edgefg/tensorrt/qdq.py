"""Graph rewrites that make an ONNX model buildable by TensorRT (used by ``edgefg.tensorrt.convert``).

- :func:`symmetric_int8_qdq`: every activation Q/DQ becomes per-tensor int8 with zero point 0 whose
  range covers the original one (uint8 zero-point-0 → int8 with scale×255/127, the case NNCF emits for
  non-negative tensors such as sigmoid outputs; per-channel → per-tensor with the widest channel's range;
  asymmetric → symmetric around 0). Weight DQs that are not int8/zero-point-0 or not per output channel
  are re-quantized from their dequantized values. NNCF's int8 weights are left bit-identical.
- :func:`fix_batch`: static batch (TensorRT engines here are built for one shape).
- :func:`downconvert_opset`: for parsers that read an older opset (TensorRT 8.5: ≤ 17).
- :func:`strip_qdq_for_dla`: the implicit-INT8 (float graph + per-tensor ranges) form DLA needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefg.errors import TargetError
from edgefg.tensorrt.lint import GraphIndex, default_opset, qdq_params, weight_axis

QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@dataclass
class RewriteStats:
    activations_total: int = 0
    uint8_to_int8: int = 0
    per_channel_to_per_tensor: int = 0
    asymmetric_to_symmetric: int = 0
    weights_requantized: int = 0
    zero_points_added: int = 0
    nodes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.nodes)

    def as_dict(self) -> dict:
        return {
            "activation_quantizers": self.activations_total,
            "uint8_to_int8": self.uint8_to_int8,
            "per_channel_to_per_tensor": self.per_channel_to_per_tensor,
            "asymmetric_to_symmetric": self.asymmetric_to_symmetric,
            "weights_requantized": self.weights_requantized,
            "zero_points_added": self.zero_points_added,
        }


def _set_inputs(node, scale_name: str, zp_name: str) -> None:
    while len(node.input) < 3:
        node.input.append("")
    node.input[1] = scale_name
    node.input[2] = zp_name


def _drop_attr(node, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def _set_axis(node, axis: int) -> None:
    from onnx import helper

    _drop_attr(node, "axis")
    node.attribute.append(helper.make_attribute("axis", axis))


def symmetric_int8_qdq(model) -> RewriteStats:
    """Rewrite ``model`` in place so that all its Q/DQ is TensorRT-ready; return what changed."""
    from onnx import numpy_helper

    index = GraphIndex(model)
    g = model.graph
    stats = RewriteStats()
    new_inits = []
    for q in list(g.node):
        if q.op_type != "QuantizeLinear" or q.input[0] in index.const:
            continue
        stats.activations_total += 1
        scale, zp, axis = qdq_params(index, q)
        if scale is None:
            raise TargetError(f"QuantizeLinear '{q.name}' has a non-constant scale", "re-quantize the model (edgefg compress --recipe int8)")
        zp = np.zeros_like(scale, dtype=np.uint8) if zp is None else zp
        qmin, qmax = QRANGE[np.dtype(zp.dtype)]
        zpf = zp.astype(np.float64)
        lo, hi = scale * (qmin - zpf), scale * (qmax - zpf)
        if zp.dtype == np.int8 and np.all(zp == 0) and scale.size == 1:
            for node in [q] + [c for c in index.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
                _ensure_zero_point(node, scale, new_inits, stats)
            continue  # already TensorRT-ready
        bound = float(np.max(np.maximum(np.abs(lo), np.abs(hi))))
        new_scale = np.array(bound / 127.0, dtype=np.float32)
        if zp.dtype == np.uint8:
            stats.uint8_to_int8 += 1
        if scale.size > 1:
            stats.per_channel_to_per_tensor += 1
        if np.any(zp != 0):
            stats.asymmetric_to_symmetric += 1
        base = (q.name or q.output[0]).replace("/", "_")
        s_name, z_name = f"{base}_trt_scale", f"{base}_trt_zp"
        new_inits += [numpy_helper.from_array(new_scale, s_name), numpy_helper.from_array(np.array(0, dtype=np.int8), z_name)]
        for node in [q] + [c for c in index.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
            _set_inputs(node, s_name, z_name)
            _drop_attr(node, "axis")
        stats.nodes.append(q.name)
    for dq in list(g.node):
        if dq.op_type != "DequantizeLinear" or dq.input[0] not in index.const:
            continue
        values = index.const[dq.input[0]]
        scale, zp, axis = qdq_params(index, dq)
        consumers = index.consumers.get(dq.output[0], [])
        wanted = {weight_axis(c, list(c.input).index(dq.output[0]), values.ndim) for c in consumers} - {None}
        want = wanted.pop() if len(wanted) == 1 else 0
        zp_ok = values.dtype == np.int8 and (zp is None or (zp.dtype == np.int8 and np.all(zp == 0)))
        axis_ok = scale.size == 1 or axis % values.ndim == want
        if zp_ok and axis_ok:
            _ensure_zero_point(dq, scale, new_inits, stats)
            continue
        w = _dequantize(values, scale, zp, axis)
        reduce_axes = tuple(a for a in range(w.ndim) if a != want)
        amax = np.max(np.abs(w), axis=reduce_axes)
        s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[want] = -1
        q8 = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
        base = (dq.name or dq.output[0]).replace("/", "_")
        names = (f"{base}_trt_w", f"{base}_trt_scale", f"{base}_trt_zp")
        new_inits += [
            numpy_helper.from_array(q8, names[0]),
            numpy_helper.from_array(s, names[1]),
            numpy_helper.from_array(np.zeros(s.shape, dtype=np.int8), names[2]),
        ]
        dq.input[0] = names[0]
        _set_inputs(dq, names[1], names[2])
        _set_axis(dq, want)
        stats.weights_requantized += 1
        stats.nodes.append(dq.name)
    g.initializer.extend(new_inits)
    _drop_unused_initializers(model)
    stale = {o for n in g.node if n.name in set(stats.nodes) for o in n.output}  # types changed (uint8 → int8)
    keep = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(keep)
    return stats


def _ensure_zero_point(node, scale: np.ndarray, new_inits: list, stats: RewriteStats) -> None:
    """Give a Q/DQ without its optional zero point an explicit int8 zero one: TensorRT 8.5's parser
    requires all three inputs ("This version of TensorRT requires 3 inputs for the DequantizeLinear
    operator", onnx-tensorrt 8.5-GA QuantDequantLinearHelper), and without it the type is uint8."""
    from onnx import numpy_helper

    if len(node.input) > 2 and node.input[2]:
        return
    name = f"{(node.name or node.output[0]).replace('/', '_')}_trt_zp"
    new_inits.append(numpy_helper.from_array(np.zeros(np.asarray(scale).shape, dtype=np.int8), name))
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name
    stats.zero_points_added += 1
    stats.nodes.append(node.name)


def _dequantize(values: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    v = values.astype(np.float64)
    z = np.zeros_like(scale, dtype=np.float64) if zp is None else zp.astype(np.float64)
    if scale.size > 1:
        shape = [1] * v.ndim
        shape[axis % v.ndim] = -1
        return (v - z.reshape(shape)) * scale.reshape(shape)
    return (v - z) * scale


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def fix_batch(model, batch: int = 1) -> list[str]:
    """Set the leading (batch) dimension of every graph input/output to ``batch``; re-infer shapes.
    Returns the names of the symbolic dims that were fixed."""
    import onnx

    g = model.graph
    inits = {t.name for t in g.initializer}
    fixed = []
    for v in list(g.input) + list(g.output):
        if v.name in inits:
            continue
        dims = v.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            fixed.append(dims[0].dim_param or "?")
            dims[0].Clear()
            dims[0].dim_value = batch
        elif dims and dims[0].dim_value != batch:
            raise TargetError(
                f"'{v.name}' has a fixed batch of {dims[0].dim_value}, not {batch}",
                "export the model with a dynamic batch axis (edgefg compress does)",
            )
    del g.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g.value_info.extend(inferred.graph.value_info)
    return fixed


REDUCE_18 = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"}


def downconvert_opset(model, max_opset: int):
    """Return ``model`` at opset ``max_opset`` (unchanged when already at or below it).

    Node by node: an op whose definition is the same at both opsets is kept; one that only gained
    types or attributes is kept when those attributes hold their defaults; Reduce* (axes input in
    opset 18 → attribute) and Split (``num_outputs``) are rewritten. Anything else raises a
    TargetError naming the node — onnx.version_converter is not used because it misses adapters
    (e.g. Mul 14→13) and leaves opset-18 attributes behind on ReduceMean.
    """
    import onnx
    from onnx import defs, helper

    current = default_opset(model)
    if current <= max_opset:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    index = GraphIndex(model)

    def fail(node, why: str) -> TargetError:
        return TargetError(
            f"cannot convert node '{node.name}' ({node.op_type}) from opset {current} to {max_opset}: {why}",
            f"re-export the model at opset ≤ {max_opset} without it, or use a target with a newer TensorRT (JetPack 6: TensorRT 10)",
        )

    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            old = defs.get_schema(node.op_type, max_opset, "")
        except Exception:
            raise fail(node, f"the op does not exist in opset {max_opset}") from None
        new = defs.get_schema(node.op_type, current, "")
        if old.since_version == new.since_version:
            continue
        if node.op_type in REDUCE_18 and len(node.input) > 1 and node.input[1]:
            axes = index.value(node.input[1])
            if axes is None:
                raise fail(node, "its axes are not a constant")
            del node.input[1:]
            node.attribute.append(helper.make_attribute("axes", [int(a) for a in np.ravel(axes)]))
        if node.op_type == "Reshape":  # allowzero only matters when the target shape holds a 0
            shape = index.value(node.input[1])
            if shape is not None and not np.any(shape == 0):
                _drop_attr(node, "allowzero")
        if node.op_type == "Split":
            _drop_attr(node, "num_outputs")  # older Split divides equally when no split sizes are given
        for a in list(node.attribute):
            if a.name in old.attributes:
                continue
            spec = new.attributes.get(a.name)
            default = spec.default_value if spec is not None else None
            if default is None or not default.type or helper.get_attribute_value(default) != helper.get_attribute_value(a):
                raise fail(node, f"attribute '{a.name}' has no equivalent in opset {max_opset}")
            _drop_attr(node, a.name)
        if len([i for i in node.input if i]) > old.max_input:
            raise fail(node, f"it has {len(node.input)} inputs, opset {max_opset} allows {old.max_input}")
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max_opset
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", max_opset)])
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise TargetError(
            f"the model converted to opset {max_opset} is not valid: {str(exc).strip().splitlines()[0][:240]}",
            f"re-export the ONNX at opset ≤ {max_opset}",
        ) from None
    return model


def strip_qdq_for_dla(model) -> tuple[Any, dict[str, float]]:
    """The implicit-quantization form of a (TensorRT-ready, symmetric int8) Q/DQ model, for DLA.

    DLA takes only implicit quantization (NVIDIA/TensorRT#2222): the float network plus a dynamic
    range per tensor. Each activation Q→DQ pair is removed and its range recorded for the tensor it
    quantized (``amax = 127 × scale``: the symmetric int8 grid's bound); each weight DQ becomes a
    float initializer holding the dequantized weights (TensorRT re-quantizes weights itself).
    Returns ``(float model, {tensor name: amax})``; ``model`` is not modified."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto.FromString(model.SerializeToString())
    index = GraphIndex(m)
    g = m.graph
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    scales: dict[str, float] = {}
    drop: set[int] = set()
    new_inits = []
    for node in g.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in index.const:
            scale, zp, _ = qdq_params(index, node)
            if scale is None or np.asarray(scale).size != 1 or (zp is not None and (zp.dtype != np.int8 or np.any(zp != 0))):
                raise TargetError(
                    f"QuantizeLinear '{node.name}' is not per-tensor symmetric int8, so it has no single dynamic range for DLA",
                    "deploy rewrites Q/DQ first (symmetric_int8_qdq); re-quantize the model if this persists",
                )
            consumers = index.consumers.get(node.output[0], [])
            if not consumers or any(c.op_type != "DequantizeLinear" for c in consumers):
                raise TargetError(f"QuantizeLinear '{node.name}' is not followed only by DequantizeLinear", "re-quantize with Q/DQ pairs")
            x = node.input[0]
            scales[x] = max(scales.get(x, 0.0), float(np.asarray(scale)) * 127.0)
            drop.add(id(node))
            for dq in consumers:
                drop.add(id(dq))
                rename[dq.output[0]] = x
        elif node.op_type == "DequantizeLinear" and node.input[0] in index.const:
            scale, zp, axis = qdq_params(index, node)
            w = _dequantize(index.const[node.input[0]], scale, zp, axis).astype(np.float32)
            new_inits.append(numpy_helper.from_array(w, node.output[0]))
            drop.add(id(node))
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    extra = []
    for name, src in rename.items():
        if name in outputs:  # a graph output produced by a DQ keeps its name through an Identity
            extra.append(helper.make_node("Identity", [src], [name], name=f"{name}_dla_identity"))
    del g.node[:]
    g.node.extend(keep + extra)
    g.initializer.extend(new_inits)
    _drop_unused_initializers(m)
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m, scales
