"""Wrapping already-converted models (.tflite, .onnx, OpenVINO .xml) into bundles that validate,
run and bench open like any other; the real Coral iNat bird model on the cub100 classes it knows."""
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.calibration.dataset import iter_batches, scan
from edgefg.cli import cli
from edgefg.deploy import deploy
from edgefg.errors import ClassMismatchError, ModelLoadError, TargetError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.preprocess import geometry, preprocess, read_image
from tests.conftest import CLASSES, DATA

CORAL = DATA / "models" / "coral"


def _labels_file(tmp_path, names):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def _artifact_scores(artifact, image_folder):
    samples = scan(image_folder).samples
    with LoadedBundle(artifact) as a:
        return a.scores(np.concatenate([b.x for b in iter_batches(samples, a.manifest.preprocess, 8)]))


def _bundle_scores(bundle, image_folder):
    samples = scan(image_folder, load_manifest(bundle).labels).samples
    with LoadedBundle(bundle) as b:
        return b.scores(np.concatenate([x.x for x in iter_batches(samples, b.manifest.preprocess, 8)]))


def test_wrap_onnx_and_openvino_ir_with_a_sidecar_config(tiny_model, tiny_artifacts, image_folder, tmp_path):
    """The artifact's ONNX (and its IR), wrapped with the model's config.json beside them, give the artifact's scores."""
    import openvino as ov

    folder = tmp_path / "given"
    folder.mkdir()
    shutil.copy2(tiny_artifacts["fp32"] / "model.onnx", folder / "classifier.onnx")
    shutil.copy2(tiny_model / "config.json", folder / "config.json")  # preprocessing + label_names
    ov.save_model(ov.convert_model(str(folder / "classifier.onnx")), str(folder / "classifier.xml"))  # FP16 weights (the default)
    ref = _artifact_scores(tiny_artifacts["fp32"], image_folder)
    cases = (("classifier.onnx", "onnxruntime-cpu", "fp32"), ("classifier.onnx", "intel-cpu", "fp32"), ("classifier.xml", "intel-cpu", "fp16"))
    for model, target, precision in cases:
        out = tmp_path / f"{model}-{target}"
        result = deploy(folder / model, target, out)
        m = load_manifest(out)  # checksums of every file, .bin included
        assert m.source["type"] == "wrapped" and m.source["preprocess"] == "config.json" and m.labels == CLASSES
        assert m.precision == precision and m.preprocess.layout == "NCHW" and m.preprocess.input_size == (64, 64)
        assert set(m.files) >= {model, "labels.txt", "target.toml"} | ({"classifier.bin"} if model.endswith(".xml") else set())
        got = _bundle_scores(out, image_folder)
        assert np.abs(got - ref).max() < (1e-3 if precision == "fp32" else 2e-2) * max(1.0, np.abs(ref).max()), (model, target)
        assert result.manifest.parity["samples"] >= 1

    # no config.json: the same preprocessing from command-line options; and a GPU profile (CPU stand-in here)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy2(folder / "classifier.onnx", bare / "classifier.onnx")
    args = ["--mean", 0.5, 0.5, 0.5, "--std", 0.25, 0.25, 0.25, "--crop-pct", 0.875, "--interpolation", "bilinear", "--resize", "pil"]
    cmd = ["deploy", bare / "classifier.onnx", "-t", "onnxruntime-cpu", "--labels", _labels_file(bare, CLASSES), "-o", tmp_path / "flags", *args]
    r = CliRunner().invoke(cli, [str(a) for a in cmd])
    assert r.exit_code == 0, r.output
    flags = load_manifest(tmp_path / "flags")
    assert flags.source["preprocess"].startswith("command-line options") and flags.preprocess.resize == "pil"
    assert np.abs(_bundle_scores(tmp_path / "flags", image_folder) - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())
    gpu = deploy(folder / "classifier.xml", "intel-gpu", tmp_path / "gpu")
    assert "standing in for GPU" in gpu.manifest.parity["inputs"] and gpu.manifest.backend_options["device"] == "GPU"


def test_wrap_refuses_bad_input_with_the_fix(tflite_bundles, tiny_artifacts, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy2(tflite_bundles["fp32"] / "model.tflite", model)
    with pytest.raises(ClassMismatchError, match="4 labels .* 3 outputs"):
        deploy(model, "rpi5", tmp_path / "a", labels=_labels_file(tmp_path, CLASSES + ["extra"]))
    labels = _labels_file(tmp_path, CLASSES)
    with pytest.raises(TargetError, match="does not run on target 'intel-cpu'"):
        deploy(model, "intel-cpu", tmp_path / "b", labels=labels)
    with pytest.raises(TargetError, match="fp32 model"):
        deploy(model, "rpi5", tmp_path / "c", labels=labels, precision="int8")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(model.read_bytes()[:1500])
    with pytest.raises(ModelLoadError, match="not a readable .tflite"):
        deploy(corrupt, "rpi5", tmp_path / "d", labels=labels)
    with pytest.raises(UnsupportedError, match="not a model file edgefg can wrap"):
        deploy(tiny_artifacts["fp32"] / "report.md", "rpi5", tmp_path / "e")
    assert not any((tmp_path / n).exists() for n in "abcde")

    # the CLI: one line per error, and a wrapped bundle is reported as such
    r = CliRunner().invoke(cli, ["deploy", str(corrupt), "--target", "rpi5", "--labels", str(labels), "-o", str(tmp_path / "f")])
    assert r.exit_code == 2 and "not a readable .tflite" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["deploy", str(model), "--target", "rpi5", "--labels", str(labels), "-o", str(tmp_path / "g")])
    assert r.exit_code == 0 and "wrapped tflite fp32" in r.output, r.output


def _inat_to_cub_names(labels):
    """'Haemorhous cassinii (Cassin's Finch)' → 'Cassins_Finch' (how cub100's folders are named)."""
    def one(label):
        found = re.search(r"\(([^)]*)\)\s*$", label)
        return re.sub(r"[\s\-]+", "_", (found.group(1) if found else label).replace("'", ""))

    return [one(x) for x in labels]


@pytest.mark.realdata
def test_wrap_the_coral_inat_bird_model_and_validate_it_on_cub(tmp_path):
    from edgefg.validate.api import validate

    model = CORAL / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
    labels = [ln.strip() for ln in (CORAL / "inat_bird_labels.txt").read_text().splitlines() if ln.strip()]
    assert len(labels) == 965 and labels[-1] == "background"  # the file's lines include the background output
    with pytest.raises(ClassMismatchError, match="964 labels .* 965 outputs.*background"):
        deploy(model, "rpi5", tmp_path / "x", labels=_labels_file(tmp_path, labels[:-1]))

    names = _inat_to_cub_names(labels)
    (tmp_path / "l").mkdir()
    labels_file = _labels_file(tmp_path / "l", names)
    test = DATA / "cub100" / "test"
    data = tmp_path / "cub_inat"  # the cub100 test classes the iNat model knows, 5 images each (symlinks)
    matched = [c for c in sorted(os.listdir(test)) if c in set(names)]
    assert len(matched) == 78
    for c in matched:
        (data / c).mkdir(parents=True)
        for f in sorted(os.listdir(test / c))[:5]:
            os.symlink(test / c / f, data / c / f)

    bundle = tmp_path / "coral-rpi5"
    r = CliRunner().invoke(cli, ["deploy", str(model), "--labels", str(labels_file), "--target", "rpi5", "-o", str(bundle), "--data", str(data)])
    assert r.exit_code == 0, r.output
    m = load_manifest(bundle)
    assert (m.backend, m.format, m.precision, m.output_activation) == ("tflite", "tflite", "int8", "softmax")
    assert (m.preprocess.layout, m.preprocess.dtype, m.preprocess.quant_scale, m.preprocess.quant_zero_point) == ("NHWC", "uint8", 0.0078125, 128)
    assert m.outputs[0].dtype == "uint8" and m.outputs[0].quant_scale == 0.00390625 and len(m.labels) == 965

    # raw pixels in, as the model expects: the one preprocess function gives back the resized RGB bytes
    image = read_image(CORAL / "parrot.jpg")
    assert np.array_equal(preprocess(image, m.preprocess), geometry(image, m.preprocess)[:, :, ::-1])
    with LoadedBundle(bundle) as b:
        probs = b.classify([image])[0]
    assert "Scarlet Macaw" in labels[int(probs.argmax())] and probs.max() > 0.5 and probs.sum() <= 1.01  # uint8 probabilities

    result = validate(bundle, data)
    assert result["images"] == 390
    assert result["top1"] >= 0.80, result["top1"]  # 0.846 on these 390 images; 0.875 on all 2,310 (data README: 0.873)


def test_wrap_a_tflite_on_a_device_without_torch(tflite_bundles, tmp_path):
    from tests.runtime.test_no_torch import device_edgefg as _edgefg

    model = tmp_path / "m.tflite"
    shutil.copy2(tflite_bundles["int8"] / "model.tflite", model)
    labels = _labels_file(tmp_path, CLASSES)
    r = _edgefg("deploy", model, "--labels", labels, "--target", "rpi4", "-o", tmp_path / "b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = load_manifest(tmp_path / "b")
    assert (m.target, m.precision, m.preprocess.dtype, m.preprocess.layout) == ("rpi4", "int8", "int8", "NHWC")
    # no config.json: raw-pixel defaults derived from the file's input quantization
    s, z = m.preprocess.quant_scale, m.preprocess.quant_zero_point
    assert np.allclose(m.preprocess.std, [1 / (255 * s)] * 3) and np.allclose(m.preprocess.mean, [z / 255] * 3)
    assert "--reference" not in r.stdout and "wrapped tflite int8" in r.stdout
