"""Regenerate tiny.onnx, the network `edgefg doctor` builds into a TensorRT engine on the device.

input (1,3,32,32) → Conv 3→8 3×3 → Relu → GlobalAveragePool → Flatten → Gemm 8→3 → logits (1,3);
opset 13 so every TensorRT line edgefg targets (8.2 reads ≤ 13) parses it. Seeded weights.
Run: python edgefg/assets/doctor/make_tiny_onnx.py (needs onnx; the device does not).
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"),
        numpy_helper.from_array((rng.standard_normal((3, 8)) * 0.5).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(3, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "edgefg_doctor_tiny",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgefg")
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


if __name__ == "__main__":
    onnx.save(make(), str(Path(__file__).with_name("tiny.onnx")))
