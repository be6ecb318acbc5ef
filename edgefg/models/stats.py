"""Static model statistics from an ONNX graph: parameters and multiply-accumulates (MACs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def onnx_stats(path: str | Path) -> dict[str, float]:
    """Parameter count (weights only, not Q/DQ scales), MACs per image for Conv/Gemm/MatMul, file size."""
    import onnx
    from onnx import shape_inference

    path = Path(path)
    model = onnx.load(str(path))
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is best effort; MACs then count fewer nodes
        pass
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    qdq_inputs = {n.input[k] for n in g.node if n.op_type in QDQ_OPS for k in (1, 2) if len(n.input) > k}
    params = sum(int(np.prod(i.dims)) for name, i in inits.items() if name not in qdq_inputs)

    shapes: dict[str, list[int]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for name, init in inits.items():
        shapes[name] = list(init.dims)
    # weights behind DequantizeLinear: follow the DQ output back to its initializer shape
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            shapes[n.output[0]] = list(inits[n.input[0]].dims)

    macs = 0
    for n in g.node:
        if n.op_type == "Conv" and n.output[0] in shapes and n.input[1] in shapes:
            out = shapes[n.output[0]]
            w = shapes[n.input[1]]  # (Cout, Cin/groups, kh, kw)
            if len(out) == 4 and len(w) == 4:
                macs += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in shapes and n.output[0] in shapes:
            w = shapes[n.input[1]]
            out = shapes[n.output[0]]
            if len(w) >= 2 and out:
                k = w[-2] if n.op_type == "MatMul" or not _attr(n, "transB") else w[-1]
                macs += int(np.prod(out[1:])) * int(k)
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    return {"params": params, "macs": macs, "size_mb": size / 1e6}


def _attr(node, name: str) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return 0
