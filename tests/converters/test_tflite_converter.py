"""Artifact → .tflite with litert-torch: FP32 parity, FP16 weights, PT2E INT8 with NHWC int8 I/O
read from the file, and the refusals (INT8 artifact as FP32, source model gone or changed, no
calibration images)."""
import json
import shutil

import numpy as np
import pytest

from edgefg.calibration.dataset import iter_batches, scan
from edgefg.deploy import deploy
from edgefg.errors import DataError, InputPathError, ModelLoadError, TargetError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.preprocess import convert_batch, preprocess, read_image
from edgefg.validate.metrics import parity

pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")


def _scores_vs_artifact(bundle, artifact, image_folder):
    """Bundle and artifact scores on the same images, each prepared by its own manifest."""
    samples = scan(image_folder).samples
    with LoadedBundle(bundle) as b, LoadedBundle(artifact) as a:
        xb = np.concatenate([x.x for x in iter_batches(samples, b.manifest.preprocess, 8)])
        xa = np.concatenate([x.x for x in iter_batches(samples, a.manifest.preprocess, 8)])
        return b.scores(xb), a.scores(xa), xb, b.manifest


def test_fp32_tflite_is_nhwc_and_matches_the_artifact(tflite_bundles, tiny_artifacts, image_folder):
    m = load_manifest(tflite_bundles["fp32"])  # verifies every checksum
    assert (m.format, m.backend, m.precision, m.target) == ("tflite", "tflite", "fp32", "rpi5")
    assert m.model_file == "model.tflite" and m.preprocess.layout == "NHWC" and m.preprocess.dtype == "float32"
    assert m.inputs[0].shape == [1, 64, 64, 3] and m.outputs[0].shape == [1, 3]
    assert m.parity["max_abs"] < 1e-4 and m.parity["top1_agreement"] == 1.0
    got, ref, x, _ = _scores_vs_artifact(tflite_bundles["fp32"], tiny_artifacts["fp32"], image_folder)
    assert x.shape[1:] == (64, 64, 3)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_int8_tflite_takes_int8_nhwc_through_the_one_preprocess(tflite_bundles, tiny_artifacts, image_folder):
    from edgefg.runtime.backends.tflite import inspect_tflite

    bundle = tflite_bundles["int8"]
    m = load_manifest(bundle)
    info = inspect_tflite(str(bundle / m.model_file))
    # what the manifest says is what the file says, not a guess
    assert m.preprocess.dtype == info.input.dtype == "int8" and m.preprocess.layout == info.layout == "NHWC"
    assert (m.preprocess.quant_scale, m.preprocess.quant_zero_point) == (info.input.quant_scale, info.input.quant_zero_point)
    assert m.outputs[0].dtype == "int8" and m.outputs[0].quant_scale == info.output.quant_scale
    assert info.ops.get("CONV_2D", 0) > 0 and "PT2E" in " ".join(m.compression[-1]["notes"])

    # a camera frame (odd size) goes through the one preprocess function to int8 H×W×C...
    image = read_image(scan(image_folder).samples[0].path)
    x = preprocess(image, m.preprocess)
    assert x.dtype == np.int8 and x.shape == (64, 64, 3) and len(np.unique(x)) > 20
    # ... equal to the artifact's float NCHW sample re-expressed for the bundle
    art = load_manifest(tiny_artifacts["int8"])
    assert np.array_equal(convert_batch(preprocess(image, art.preprocess)[None], art.preprocess, m.preprocess)[0], x)

    got, ref, _, _ = _scores_vs_artifact(bundle, tiny_artifacts["int8"], image_folder)
    p = parity(got, ref)
    assert p["cosine_min"] > 0.98 and p["top1_agreement"] >= 0.8, p  # INT8 vs INT8 (PT2E vs NNCF): loose but real
    assert got.dtype == np.float32 and len(np.unique(got)) > 3  # dequantized scores, not raw int8 codes
    assert m.parity["cosine_min"] > 0.98


def test_fp16_weights_halve_the_file_and_keep_parity(tflite_bundles, tmp_path):
    from edgefg.converters.onnx_to_tflite import _fp16_bytes
    from edgefg.runtime.backends.tflite import TFLiteBackend, inspect_tflite

    fp32 = tflite_bundles["fp32"] / "model.tflite"
    fp16 = tmp_path / "fp16.tflite"
    fp16.write_bytes(_fp16_bytes(fp32.read_bytes()))
    info = inspect_tflite(str(fp16))
    assert info.precision == "fp16" and info.input.dtype == "float32"
    assert fp16.stat().st_size < 0.75 * fp32.stat().st_size
    m = load_manifest(tflite_bundles["fp32"])
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype(np.float32)
    with TFLiteBackend(fp32, m) as a, TFLiteBackend(fp16, m) as b:
        p = parity(b.infer(x), a.infer(x))
    assert p["cosine_min"] > 0.999 and p["max_abs"] > 0  # rounded weights, same predictions


def _edit_manifest(artifact, tmp_path, name, edit):
    copy = tmp_path / name
    shutil.copytree(artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    edit(data, copy)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


def test_refusals_name_the_fix(tiny_artifacts, tiny_model, image_folder, tmp_path):
    with pytest.raises(TargetError, match="artifact is INT8"):
        deploy(tiny_artifacts["int8"], "rpi5", tmp_path / "a", precision="fp32")

    gone = _edit_manifest(tiny_artifacts["fp32"], tmp_path, "gone", lambda d, _: d["source"].update(path=str(tmp_path / "moved")))
    with pytest.raises(InputPathError, match="source model .* is gone"):
        deploy(gone, "rpi5", tmp_path / "b")

    from_onnx = _edit_manifest(tiny_artifacts["fp32"], tmp_path, "from_onnx", lambda d, _: d["source"].update(type="onnx"))
    with pytest.raises(UnsupportedError, match="compressed from an ONNX model"):
        deploy(from_onnx, "rpi5", tmp_path / "c")

    pruned = _edit_manifest(tiny_artifacts["fp32"], tmp_path, "pruned", lambda d, _: d["compression"].append({"method": "prune"}))
    with pytest.raises(UnsupportedError, match="changed by prune"):
        deploy(pruned, "rpi5", tmp_path / "d")

    # the source weights changed after compress: refused, not silently converted
    from safetensors.torch import load_file, save_file

    edited = tmp_path / "edited_model"
    shutil.copytree(tiny_model, edited)
    sd = load_file(str(edited / "model.safetensors"))
    head = [k for k in sd if k.endswith("weight") and sd[k].ndim == 2][-1]
    sd[head] = sd[head] * 3.0
    save_file(sd, str(edited / "model.safetensors"))
    changed = _edit_manifest(tiny_artifacts["fp32"], tmp_path, "changed", lambda d, _: d["source"].update(path=str(edited)))
    with pytest.raises(ModelLoadError, match="no longer matches the artifact"):
        deploy(changed, "rpi5", tmp_path / "e")

    def drop_samples(d, copy):  # an artifact without kept calibration images, deployed without --data
        shutil.rmtree(copy / "parity_samples")
        d["files"] = {k: v for k, v in d["files"].items() if not k.startswith("parity_samples/")}

    bare = _edit_manifest(tiny_artifacts["int8"], tmp_path, "bare", drop_samples)
    with pytest.raises(DataError, match="needs calibration images"):
        deploy(bare, "rpi5", tmp_path / "f")
    assert not any((tmp_path / n).exists() for n in "abcdef")
