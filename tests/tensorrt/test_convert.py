"""TensorRT export: Q/DQ rewrite, lint rules, opset down-conversion and the Jetson deploy.

Everything here runs without TensorRT: it checks the ONNX a Jetson will build from (in ONNX Runtime)
and the rules TensorRT documents; it does not prove that TensorRT builds it."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgefg.errors import TargetError  # noqa: E402
from edgefg.tensorrt.lint import GraphIndex, lint, op_table, raise_on_errors  # noqa: E402
from edgefg.tensorrt.qdq import downconvert_opset, fix_batch, symmetric_int8_qdq  # noqa: E402


def run(model, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def conv_model(act_zp=np.uint8(0), act_scale=0.02, weight_axis=0, batch="N", extra=None, opset=18, per_channel_act=False, out_shape=None):
    """input → Q/DQ(activation) → Conv(DQ(int8 weights)) → Sigmoid [→ extra op]."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    axis_len = w.shape[weight_axis]
    red = tuple(a for a in range(4) if a != weight_axis)
    ws = (np.abs(w).max(axis=red) / 127).astype(np.float32)
    shape = [1, 1, 1, 1]
    shape[weight_axis] = axis_len
    wq = np.clip(np.round(w / ws.reshape(shape)), -127, 127).astype(np.int8)
    if per_channel_act:
        a_scale = np.full(3, act_scale, np.float32) * np.array([1.0, 0.5, 0.25], np.float32)
        a_zp = np.full(3, act_zp, dtype=np.asarray(act_zp).dtype)
    else:
        a_scale, a_zp = np.array(act_scale, np.float32), np.asarray(act_zp)
    inits = [
        numpy_helper.from_array(a_scale, "a_s"), numpy_helper.from_array(a_zp, "a_z"),
        numpy_helper.from_array(wq, "w_q"), numpy_helper.from_array(ws, "w_s"),
        numpy_helper.from_array(np.zeros_like(ws, dtype=np.int8), "w_z"),
    ]
    act_axis = [helper.make_attribute("axis", 1)] if per_channel_act else []
    q = helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"], name="q_act")
    dq = helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"], name="dq_act")
    q.attribute.extend(act_axis)
    dq.attribute.extend(act_axis)
    nodes = [
        q, dq,
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="dq_w", axis=weight_axis),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["y" if extra is None else "s"], name="sig"),
    ]
    if extra is not None:
        nodes.append(extra)
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or [batch, 4, 8, 8])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


X = np.random.default_rng(1).random((1, 3, 8, 8)).astype(np.float32) * 4


def rules(issues):
    return {i.rule for i in issues}


def test_op_table_lookup_by_release_line():
    assert op_table("10.3.0").version == "10.3" and op_table("10.3").max_opset == 20
    assert op_table("8.5.2").max_opset == 17 and op_table("8.6.1").version == "8.5"
    assert op_table("8.2.1").max_opset == 13
    assert "LayerNormalization" in op_table("10.3").ops and "LayerNormalization" not in op_table("8.5").ops
    with pytest.raises(TargetError, match="no ONNX operator table for TensorRT 9.1"):
        op_table("9.1")


def test_lint_flags_unsupported_op_naming_node():
    m = conv_model(act_zp=np.int8(0), batch=1, extra=helper.make_node("Unique", ["s"], ["y"], name="my_unique"), out_shape=["u"])
    issues = lint(m, "10.3")
    assert rules(issues) == {"unsupported-op"}
    with pytest.raises(TargetError, match="op Unique at node 'my_unique'.*TensorRT 10.3"):
        raise_on_errors(issues, "10.3", "jetson-orin-nano")
    # an op newer than the parser is caught from the table, not from code
    m = conv_model(act_zp=np.int8(0), batch=1, extra=helper.make_node("HardSwish", ["s"], ["y"], name="hs"))
    assert not lint(m, "10.3") and "unsupported-op" in rules(lint(m, "8.2"))


def test_lint_flags_dynamic_shape_and_fix_batch_clears_it():
    m = conv_model(act_zp=np.int8(0), batch="N")
    issues = lint(m, "10.3")
    assert rules(issues) == {"dynamic-shape"} and issues[0].node == "x"
    assert not lint(m, "10.3", static_shapes=False)
    assert set(fix_batch(m, 1)) == {"N"}
    assert not lint(m, "10.3")


def test_uint8_qdq_flagged_then_rewritten_to_int8_with_wider_scale():
    m = conv_model(act_zp=np.uint8(0), act_scale=0.02, batch=1)
    assert rules(lint(m, "10.3")) == {"qdq-dtype"}
    before = run(m, X)
    stats = symmetric_int8_qdq(m)
    assert stats.uint8_to_int8 == 1 and stats.weights_requantized == 0
    assert not lint(m, "10.3")
    idx = GraphIndex(m)
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    assert idx.value(q.input[1]) == pytest.approx(0.02 * 255 / 127)
    assert idx.value(q.input[2]).dtype == np.int8 and idx.value(q.input[2]) == 0
    dq = next(n for n in m.graph.node if n.name == "dq_act")
    assert list(dq.input[1:]) == list(q.input[1:])  # the pair shares the new scale
    after = run(m, X)
    assert cosine(before, after) > 0.999 and np.abs(before - after).max() < 0.05


def test_asymmetric_and_per_channel_activations_become_symmetric_per_tensor():
    m = conv_model(act_zp=np.uint8(100), act_scale=0.02, batch=1, per_channel_act=True)
    assert {"qdq-dtype", "qdq-activation-per-channel"} <= rules(lint(m, "10.3"))
    before = run(m, X * 0.15)
    stats = symmetric_int8_qdq(m)
    assert stats.per_channel_to_per_tensor == 1 and stats.asymmetric_to_symmetric == 1
    assert not lint(m, "10.3")
    x = X * 0.15  # inside every channel's original range (outside it the original clipped, the rewrite does not)
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    scale = GraphIndex(m).value(q.input[1])
    assert scale.size == 1 and scale == pytest.approx(0.02 * 155 / 127)  # covers the widest channel's range
    assert cosine(before, run(m, x)) > 0.99


def test_weights_on_wrong_axis_are_requantized_per_output_channel():
    m = conv_model(act_zp=np.int8(0), weight_axis=1, batch=1)
    assert rules(lint(m, "10.3")) == {"qdq-weight-axis"}
    before = run(m, X)
    assert symmetric_int8_qdq(m).weights_requantized == 1
    assert not lint(m, "10.3")
    dq = next(n for n in m.graph.node if n.name == "dq_w")
    assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
    assert GraphIndex(m).value(dq.input[0]).dtype == np.int8
    assert cosine(before, run(m, X)) > 0.999


def test_unpaired_quantize_is_flagged():
    m = conv_model(act_zp=np.int8(0), batch=1)
    m.graph.node.append(helper.make_node("Relu", ["xq"], ["r"], name="relu_on_int8"))
    assert "qdq-unpaired" in rules(lint(m, "10.3"))


def test_opset_down_conversion_for_trt85_keeps_outputs():
    m = conv_model(act_zp=np.int8(0), batch=1, extra=helper.make_node("ReduceMean", ["s", "axes"], ["y"], name="rm", keepdims=0), out_shape=[1, 4])
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    assert rules(lint(m, "8.5")) == {"opset"}
    low = downconvert_opset(m, 17)
    assert not lint(low, "8.5")
    rm = next(n for n in low.graph.node if n.op_type == "ReduceMean")
    assert [list(a.ints) for a in rm.attribute if a.name == "axes"] == [[2, 3]] and len(rm.input) == 1
    np.testing.assert_allclose(run(low, X), run(m, X), rtol=1e-6)
    assert not lint(downconvert_opset(m, 13), "8.2")


def test_opset_down_conversion_refuses_clearly():
    m = conv_model(act_zp=np.int8(0), batch=1, extra=helper.make_node("HardSwish", ["s"], ["y"], name="hs"))
    with pytest.raises(TargetError, match="cannot convert node 'hs' \\(HardSwish\\).*does not exist in opset 13"):
        downconvert_opset(m, 13)


# -- on the tiny model's NNCF artifact ---------------------------------------------------------
def test_rewrite_makes_the_nncf_artifact_trt_ready(tiny_artifacts):
    src = onnx.load(str(tiny_artifacts["int8"] / "model.onnx"))
    assert {"qdq-dtype", "qdq-activation-per-channel"} & rules(lint(src, "10.3", static_shapes=False)), "NNCF's default output is expected to need the rewrite"
    m = onnx.ModelProto.FromString(src.SerializeToString())
    stats = symmetric_int8_qdq(m)
    fix_batch(m, 1)
    assert stats.changed and not lint(m, "10.3")
    # every zero point int8 0, every activation scale per-tensor, NNCF's int8 weights untouched
    idx, old = GraphIndex(m), GraphIndex(src)
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = idx.value(n.input[2])
            assert zp.dtype == np.int8 and not zp.any()
            if n.input[0] not in idx.const:
                assert idx.value(n.input[1]).size == 1
            else:
                np.testing.assert_array_equal(idx.value(n.input[0]), old.value(n.input[0]))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert cosine(run(src, x), run(m, x)) > 0.995


def test_deploy_for_jetson_int8_and_xavier(tiny_artifacts, tmp_path):
    from edgefg.deploy import deploy
    from edgefg.manifest import load_manifest

    res = deploy(tiny_artifacts["int8"], "jetson", tmp_path / "orin")
    m = load_manifest(tmp_path / "orin")
    assert res.target.name == "jetson-orin-nano" and m.backend == "tensorrt" and m.format == "tensorrt-onnx"
    assert m.inputs[0].shape == [1, 3, 64, 64] and m.outputs[0].shape == [1, 3]
    assert "onnxruntime" in m.parity["candidate_runtime"] and m.parity["cosine_min"] > 0.995
    assert m.backend_options["engine"] == {"precision": "int8", "fp16": True, "int8": True, "batch": 1, "workspace_mb": 1024, "dla_cores": 0}
    assert not lint(onnx.load(str(tmp_path / "orin" / "model.onnx")), "10.3")

    deploy(tiny_artifacts["int8"], "jetson-xavier-nx", tmp_path / "xavier")
    xm = onnx.load(str(tmp_path / "xavier" / "model.onnx"))
    assert xm.opset_import[0].version == 17 and not lint(xm, "8.5.2")
    assert json.loads((tmp_path / "xavier" / "manifest.json").read_text())["backend_options"]["engine"]["dla_cores"] == 2


def test_jetson_precision_refusals(tiny_artifacts, tmp_path):
    from edgefg.deploy import deploy

    with pytest.raises(TargetError, match="jetson-nano.*does not support precision 'int8'"):
        deploy(tiny_artifacts["int8"], "jetson-nano", tmp_path / "nano", precision="int8")
    with pytest.raises(TargetError, match="needs an INT8 artifact"):
        deploy(tiny_artifacts["fp32"], "jetson", tmp_path / "x", precision="int8")
    assert not (tmp_path / "nano").exists() and not (tmp_path / "x").exists()


# -- per-release checks checked against onnx-tensorrt's docs/importers ------------------------------
def test_op_tables_follow_the_changelog():
    assert "Xor" not in op_table("8.2").ops and "Xor" in op_table("8.5").ops  # Xor: TensorRT 8.4
    for op in ("BlackmanWindow", "HammingWindow", "HannWindow", "STFT"):  # 10.4 / 10.5
        assert op not in op_table("10.3").ops
    assert op_table("8.5").qdq_requires_zero_point and not op_table("10.3").qdq_requires_zero_point


def test_missing_zero_point_flagged_for_85_and_added_by_the_rewrite():
    m = conv_model(act_zp=np.int8(0), batch=1, opset=17)
    dq_w = next(n for n in m.graph.node if n.name == "dq_w")
    del dq_w.input[2:]  # int8 weights, no zero point: valid ONNX, refused by the 8.5 parser
    assert "qdq-zero-point-missing" in rules(lint(m, "8.5")) and "qdq-zero-point-missing" not in rules(lint(m, "10.3"))
    before = run(m, X)
    stats = symmetric_int8_qdq(m)
    assert stats.zero_points_added == 1 and not lint(m, "8.5") and len(dq_w.input) == 3
    np.testing.assert_allclose(run(m, X), before, rtol=1e-6)


def test_per_axis_qdq_needs_opset_13():
    m = conv_model(act_zp=np.int8(0), batch=1, opset=13)
    assert not lint(m, "8.2")
    m.opset_import[0].version = 12
    assert "qdq-per-axis-opset" in rules(lint(m, "8.2"))


def attr_model(node, inputs, out_shape, inits=()):
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, out_shape)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m


def test_attribute_limits_topk_resize_einsum():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])
    k_big = numpy_helper.from_array(np.array([4000], np.int64), "k")
    topk = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")
    issues = lint(attr_model(topk, [x], [1, 4000], [k_big]), "8.5")
    assert any(i.rule == "op-attribute" and "K = 4000" in i.message for i in issues)
    k_in = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    assert any("K is not an initializer" in i.message for i in lint(attr_model(topk, [x, k_in], [1, 5]), "8.5"))
    unsorted = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top", sorted=0)
    assert any("sorted=0" in i.message for i in lint(attr_model(unsorted, [x], [1, 5], [numpy_helper.from_array(np.array([5], np.int64), "k")]), "10.3"))

    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    cubic = helper.make_node("Resize", ["img", "", "s"], ["y"], name="rs", mode="cubic")
    assert any("mode 'cubic'" in i.message for i in lint(attr_model(cubic, [img], [1, 3, 16, 16], [scales]), "8.5"))
    crop = helper.make_node("Resize", ["img", "", "s"], ["y"], name="rs", mode="linear", coordinate_transformation_mode="tf_crop_and_resize")
    assert any("tf_crop_and_resize" in i.message for i in lint(attr_model(crop, [img], [1, 3, 16, 16], [scales]), "10.3"))
    ok = helper.make_node("Resize", ["img", "", "s"], ["y"], name="rs", mode="linear", coordinate_transformation_mode="half_pixel")
    assert not lint(attr_model(ok, [img], [1, 3, 16, 16], [scales]), "8.5")

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    diag = helper.make_node("Einsum", ["a"], ["y"], name="es", equation="ii->i")
    assert any("diagonal" in i.message for i in lint(attr_model(diag, [a], [4]), "8.5"))
    assert not [i for i in lint(attr_model(diag, [a], [4]), "10.3") if i.rule == "op-attribute"]
    ell = helper.make_node("Einsum", ["a"], ["y"], name="es", equation="...j->j")
    assert any("ellipsis" in i.message for i in lint(attr_model(ell, [a], [4]), "8.5"))
    bcast = helper.make_node("Einsum", ["a", "b"], ["y"], name="es", equation="ij,ij->ij")
    assert any("broadcasts" in i.message for i in lint(attr_model(bcast, [a, b], [4, 4]), "8.5"))


def test_dla_form_strips_qdq_and_keeps_the_output():
    from edgefg.tensorrt.qdq import strip_qdq_for_dla

    m = conv_model(act_zp=np.int8(0), act_scale=0.04, batch=1)
    stripped, ranges = strip_qdq_for_dla(m)
    assert not [n for n in stripped.graph.node if n.op_type.endswith("QuantizeLinear")]
    assert ranges == {"x": pytest.approx(0.04 * 127)}  # the tensor the Q quantized, amax = 127 × scale
    assert len(m.graph.node) == 5  # the input model is untouched
    cos = cosine(run(stripped, X), run(m, X))  # float vs fake-quantized: same network
    assert cos > 0.999
