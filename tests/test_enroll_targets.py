"""deploy --embedding and enrol on LiteRT (rpi5) and TensorRT (Jetson) bundles of the tiny model.

TensorRT is not installable here: the Jetson bundle's Q/DQ ONNX is checked (both outputs, their names,
static shapes; parity in ONNX Runtime, the host stand-in) and the backend's multi-output path runs on
the strict fake bindings of tests/tensorrt/fakes.py — edgefg's calls, not TensorRT's numbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefg.manifest import load_manifest
from tests.conftest import CLASSES
from tests.test_enroll import check_enrolment, write_new


@pytest.fixture(scope="module")
def rpi5_emb(tmp_path_factory, tiny_artifacts, image_folder) -> dict[str, Path]:
    pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("rpi5-emb")
    return {p: deploy(tiny_artifacts[p], "rpi5", root / p, precision=p, data=image_folder, embedding=True).directory for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def enrol_sets(tmp_path_factory) -> dict[str, Path]:
    from tests.conftest import write_image_folder

    root = tmp_path_factory.mktemp("enrol-targets")
    return {"enrol": write_new(root / "enrol", 5, 1), "held": write_new(root / "held", 8, 2),
            "old_held": write_image_folder(root / "old_held", per_class=6, seed=7)}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_litert_bundle_carries_the_embedding_with_its_own_quantization(rpi5_emb, precision):
    from edgefg.errors import UnsupportedError
    from edgefg.runtime.backends.tflite import inspect_tflite

    b = rpi5_emb[precision]
    m = load_manifest(b)
    info = inspect_tflite(str(b / m.model_file), max_outputs=2)
    assert [o.role for o in m.outputs] == [None, "embedding"]
    assert [o.name for o in m.outputs] == [o.name for o in info.outputs]  # the file's signature order: scores, embedding
    assert m.outputs[0].shape[-1] == len(CLASSES) and m.outputs[1].shape[-1] == m.parity["embedding"]["width"] > len(CLASSES)
    for spec, got in zip(m.outputs, info.outputs):
        assert (spec.dtype, spec.quant_scale, spec.quant_zero_point) == (got.dtype, got.quant_scale, got.quant_zero_point)
    if precision == "int8":
        assert all(o.dtype == "int8" and o.quant_scale for o in m.outputs)
        assert m.outputs[0].quant_scale != m.outputs[1].quant_scale  # each output dequantized by its own scale
    assert m.parity["embedding"]["cosine_min"] > 0.99, m.parity["embedding"]
    assert m.parity["top1_agreement"] >= 0.9 and "embedding_reference.npz" in m.files
    with pytest.raises(UnsupportedError, match="2 outputs"):  # a plain (one-output) reader still refuses it, as wrap does
        inspect_tflite(str(b / m.model_file))


def test_litert_backend_returns_outputs_by_name_dequantized(rpi5_emb, image_folder):
    from edgefg.runtime.backends.tflite import TFLiteBackend
    from edgefg.runtime.engine.preprocess import preprocess, read_image

    b = rpi5_emb["int8"]
    m = load_manifest(b)
    x = preprocess(read_image(next(image_folder.rglob("*.jpg"))), m.preprocess)[None]
    backend = TFLiteBackend(b / m.model_file, m)
    try:
        raw = backend._run_all(x)
        outs = backend.infer_outputs(x)
        assert [r.dtype for r in raw] == [np.int8, np.int8]
        assert [o.shape for o in outs] == [(1, len(CLASSES)), (1, m.outputs[1].shape[-1])]
        for r, o, spec in zip(raw, outs, m.outputs):
            np.testing.assert_allclose(o, (r.astype(np.float32) - spec.quant_zero_point) * spec.quant_scale, rtol=1e-6)
        np.testing.assert_allclose(backend.infer(x), outs[0])  # the one-output path gives the same scores
        swapped = load_manifest(b)
        swapped.outputs = swapped.outputs[::-1]  # by name, not by position: the manifest's order decides
        other = TFLiteBackend(b / m.model_file, swapped)
        assert [r.shape[-1] for r in other._run_all(x)] == [m.outputs[1].shape[-1], len(CLASSES)]
        other.close()
    finally:
        backend.close()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_enrol_on_an_rpi5_bundle(rpi5_emb, enrol_sets, image_folder, tmp_path, precision):
    check_enrolment(rpi5_emb[precision], enrol_sets, image_folder, tmp_path / "enrolled")


# -- TensorRT ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jetson_emb(tiny_artifacts, image_folder, tmp_path_factory) -> Path:
    from edgefg.deploy import deploy

    return deploy(tiny_artifacts["int8"], "jetson-orin-nano", tmp_path_factory.mktemp("trt-emb") / "b", data=image_folder, embedding=True).directory


def test_tensorrt_qdq_onnx_carries_both_outputs(jetson_emb):
    import onnx

    m = load_manifest(jetson_emb)
    model = onnx.load(str(jetson_emb / m.model_file))
    outs = [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
    width = m.parity["embedding"]["width"]
    assert outs == [(m.outputs[0].name, [1, len(CLASSES)]), ("embedding", [1, width])]  # static batch for the engine
    assert [(o.name, o.shape, o.role) for o in m.outputs] == [(m.outputs[0].name, [1, len(CLASSES)], None), ("embedding", [1, width], "embedding")]
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer["embedding"].op_type == "Identity"
    classifier = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    assert producer["embedding"].input[0] in classifier.input  # the tensor the final classifier reads
    assert m.parity["embedding"]["cosine_min"] > 0.99 and "onnxruntime" in m.parity["candidate_runtime"]


def test_tensorrt_backend_binds_and_returns_every_output_by_name(jetson_emb, tmp_path, monkeypatch):
    """The backend on the fake bindings: the engine (built by the fake builder from the bundle's ONNX)
    has both outputs; scores_and_embedding gets each output's own buffer, by name."""
    import shutil

    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.tensorrt.builder import build_engine
    from tests.tensorrt import fakes

    def compute(self, addr):  # scores: per-channel means; embedding: their mean + 1000 over its width
        shapes = self._shapes
        ins = [t for t in self._engine.io if t["input"]]
        x = fakes.FakeMem.registry[addr[ins[0]["name"]]].read(np.dtype(fakes.TRT_NP[ins[0]["dtype"]]), shapes[ins[0]["name"]])
        y = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
        for o in (t for t in self._engine.io if not t["input"]):
            shape = shapes[o["name"]]
            v = y if o["name"] != "embedding" else np.repeat(y.mean(1, keepdims=True) + 1000, shape[-1], axis=1)
            fakes.FakeMem.registry[addr[o["name"]]].write(v.astype(fakes.TRT_NP[o["dtype"]]).reshape(shape))
        return True

    bundle = tmp_path / "b"
    shutil.copytree(jetson_emb, bundle)
    trt, cuda = fakes.fake_device(monkeypatch, tmp_path, "10.3.0")
    monkeypatch.setattr(fakes.FakeContext, "_compute", compute)
    build_engine(bundle, trt=trt)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as lb:
        assert lb.manifest.backend == "tensorrt"
        head, emb = lb.scores_and_embedding(x)  # batch 2 on a batch-1 engine: two runs, each output concatenated
        np.testing.assert_allclose(lb.scores(x), head)
    width = load_manifest(bundle).outputs[1].shape[-1]
    np.testing.assert_allclose(head, x.mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(emb, np.repeat(x.mean(axis=(1, 2, 3))[:, None] + 1000, width, axis=1), rtol=1e-5)
    assert not trt.errors and not cuda.errors, trt.errors + cuda.errors
