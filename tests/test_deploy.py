import numpy as np
import pytest

from edgefg.deploy import deploy
from edgefg.errors import OutputExistsError, TargetError
from edgefg.manifest import load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle


def test_bundles_are_self_describing(tiny_bundles):
    for key, bundle in tiny_bundles.items():
        m = load_manifest(bundle)  # verifies every checksum
        precision, target = key.split("-", 1)
        assert m.kind == "bundle" and m.target == target and m.precision == precision
        assert {"labels.txt", "target.toml", m.model_file} <= set(m.files)
        assert m.parity["samples"] > 0 and m.parity["inputs"].startswith("parity_samples")
        assert m.preprocess.input_size == (64, 64)


def test_fp32_openvino_runs_in_f32_not_bf16(tiny_bundles):
    bundle = tiny_bundles["fp32-intel-cpu"]
    m = load_manifest(bundle)
    assert m.backend_options["inference_precision"] == "f32"
    with LoadedBundle(bundle) as b:
        assert b.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    # bf16 would leave ~1e-2 relative error; f32 conversion is exact to float rounding
    assert m.parity["cosine_min"] > 0.999999 and m.parity["max_rel"] < 1e-3


def test_int8_parity_is_recorded_and_reasonable(tiny_bundles):
    m = load_manifest(tiny_bundles["int8-intel-cpu"])
    assert m.precision == "int8"
    assert 0.9 < m.parity["cosine_min"] <= 1.0 + 1e-9


def test_fp16_and_bf16_options(tiny_artifacts, tmp_path):
    res = deploy(tiny_artifacts["fp32"], "intel-cpu", tmp_path / "fp16", precision="fp16")
    assert res.manifest.precision == "fp16"
    xml_bytes = (tmp_path / "fp16" / "model.bin").stat().st_size
    fp32_bytes = (tiny_artifacts["fp32"] / "model.onnx").stat().st_size
    assert xml_bytes < 0.7 * fp32_bytes  # weights really stored as FP16
    assert res.manifest.parity["cosine_min"] > 0.999
    with pytest.raises(TargetError, match="INT8"):
        deploy(tiny_artifacts["int8"], "intel-cpu", tmp_path / "x", precision="fp32")
    with pytest.raises(TargetError, match="does not support precision 'fp16'"):
        deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", tmp_path / "y", precision="fp16")


def test_deploy_errors(tiny_artifacts, tmp_path):
    with pytest.raises(TargetError, match="unknown target 'jetson-orin-mega'"):
        deploy(tiny_artifacts["fp32"], "jetson-orin-mega", tmp_path / "a")
    out = tmp_path / "b"
    deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", out)
    with pytest.raises(OutputExistsError, match="--force"):
        deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", out)
    deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", out, force=True)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_parity_with_user_data(tiny_artifacts, image_folder, tmp_path):
    res = deploy(tiny_artifacts["fp32"], "intel-cpu", tmp_path / "b", data=image_folder, parity_samples=9)
    assert res.manifest.parity["samples"] == 9 and res.manifest.parity["inputs"] == str(image_folder)
    with LoadedBundle(res.directory) as b:
        out = b.scores(np.zeros((2, 3, 64, 64), np.float32))
    assert out.shape == (2, 3)


def test_embedded_preprocessing_in_the_openvino_ir(tiny_artifacts, image_folder, tmp_path):
    from edgefg.calibration.dataset import scan
    from edgefg.runtime.engine.preprocess import geometry, read_image
    from edgefg.validate.api import validate

    res = deploy(tiny_artifacts["fp32"], "intel-cpu", tmp_path / "emb", options={"embed_preprocess": True})
    pre = res.manifest.preprocess
    assert (pre.layout, pre.dtype, pre.color) == ("NHWC", "uint8", "BGR") and res.manifest.inputs[0].shape[1:] == [64, 64, 3]
    assert res.manifest.parity["cosine_min"] > 0.99999 and res.manifest.parity["top1_agreement"] == 1.0
    with LoadedBundle(res.directory) as b:  # the runtime now hands the model raw (resized, cropped) pixels
        image = read_image(scan(image_folder).samples[0].path)
        np.testing.assert_array_equal(b.prepare(image), geometry(image, pre))
    v = validate(res.directory, image_folder, reference=tiny_artifacts["fp32"])
    assert v["agreement"] == 1.0 and v["mean_kl"] < 1e-6
    with pytest.raises(TargetError, match="OpenVINO option"):
        deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", tmp_path / "x", options={"embed_preprocess": True})
