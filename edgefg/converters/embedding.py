"""Expose a classifier's penultimate features (the input of its final linear layer) as a second ONNX output.

Works on the graph, not on layer names, so every exported model qualifies: from the scores output
(``graph.output[0]``) walk back through shape-keeping ops (Softmax, Identity, Reshape/Flatten/Squeeze,
Cast, Q/DQ, Add of a bias) to the last ``Gemm`` or ``MatMul``; its data input is the embedding. In an
INT8 (Q/DQ) graph that input is the output of a ``DequantizeLinear``: the embedding is the float the
classifier actually reads, quantization quirks included.
"""
from __future__ import annotations

from pathlib import Path

from edgefg.errors import UnsupportedError

EMBEDDING_OUTPUT = "embedding"
_PASS_THROUGH = {"Softmax", "LogSoftmax", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast",
                 "QuantizeLinear", "DequantizeLinear", "Add", "Mul", "Div", "Sigmoid"}
_MAX_STEPS = 16


def find_classifier_input(model) -> str:
    """The name of the tensor the final Gemm/MatMul reads (its non-constant input)."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    def is_const(name: str) -> bool:  # an initializer, or a DequantizeLinear of one (Q/DQ weights)
        if name in constants:
            return True
        node = producer.get(name)
        return node is not None and node.op_type in ("DequantizeLinear", "Transpose", "Cast", "Identity") and all(
            is_const(i) for i in node.input[:1]
        )

    name = graph.output[0].name
    for _ in range(_MAX_STEPS):
        node = producer.get(name)
        if node is None:
            break
        if node.op_type in ("Gemm", "MatMul"):
            data = [i for i in node.input[:2] if i and not is_const(i)]
            if len(data) == 1:
                return data[0]
            break
        if node.op_type not in _PASS_THROUGH:
            break
        data = [i for i in node.input if i and not is_const(i)]
        if len(data) != 1:
            break
        name = data[0]
    raise UnsupportedError(
        "no final linear classifier (Gemm/MatMul) found behind the model's scores output: cannot export an embedding",
        "deploy without --embedding (enrolment needs a model whose last layer is a linear classifier)",
    )


def add_embedding_output(src: str | Path, dst: str | Path) -> tuple[str, int | None]:
    """Write ``src`` with the classifier input as a second output named ``embedding``; return (name, width)."""
    import onnx
    from onnx import helper, shape_inference

    model = onnx.load(str(src))
    if len(model.graph.output) > 1:
        raise UnsupportedError(f"'{Path(src).name}' already has {len(model.graph.output)} outputs; edgefg adds the embedding to a one-output classifier")
    tensor = find_classifier_input(model)
    inferred = shape_inference.infer_shapes(model)
    width = None
    elem = onnx.TensorProto.FLOAT
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == tensor:
            elem = vi.type.tensor_type.elem_type or elem
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[-1].HasField("dim_value"):
                width = int(dims[-1].dim_value)
    # rename through an Identity so the output has a stable name, whatever the exporter called the tensor
    model.graph.node.append(helper.make_node("Identity", [tensor], [EMBEDDING_OUTPUT], name="edgefg_embedding"))
    batch = model.graph.output[0].type.tensor_type.shape.dim[0]
    first = batch.dim_param or (batch.dim_value if batch.HasField("dim_value") else "batch")
    model.graph.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, elem, [first, width]))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return EMBEDDING_OUTPUT, width
