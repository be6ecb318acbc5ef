import json

import pytest

from edgefg.errors import BundleError, ChecksumError, OutputExistsError
from edgefg.manifest import Manifest, Preprocess, TensorSpec, atomic_output_dir, load_manifest


def _manifest() -> Manifest:
    return Manifest(
        name="m", kind="bundle", model_file="model.bin", format="onnx", backend="onnxruntime", precision="fp32",
        labels=["a", "b"], preprocess=Preprocess(input_size=(32, 48)), inputs=[TensorSpec("x", ["batch", 3, 32, 48])],
        outputs=[TensorSpec("y", ["batch", 2])],
    )


def test_roundtrip_and_checksums(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00" * 100)
    m = _manifest()
    m.record_files(tmp_path)
    m.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.preprocess.input_size == (32, 48)
    assert loaded.labels == ["a", "b"]
    assert set(loaded.files) == {"model.bin", "labels.txt"}
    assert (tmp_path / "labels.txt").read_text().split() == ["a", "b"]


def test_flipped_byte_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00" * 100)
    m = _manifest()
    m.record_files(tmp_path)
    m.save(tmp_path)
    data = bytearray((tmp_path / "model.bin").read_bytes())
    data[50] ^= 0xFF
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.bin"):
        load_manifest(tmp_path)
    load_manifest(tmp_path, verify=False)  # reading without verification still works


def test_missing_file_and_bad_schema(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"1")
    m = _manifest()
    m.record_files(tmp_path)
    m.save(tmp_path)
    (tmp_path / "model.bin").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        load_manifest(tmp_path)
    d = json.loads((tmp_path / "manifest.json").read_text())
    d["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match="schema version"):
        load_manifest(tmp_path, verify=False)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_atomic_output_dir(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.onnx").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp left behind
    with atomic_output_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(OutputExistsError):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_manifests_before_crop_modes_are_migrated():
    from edgefg.manifest import Preprocess

    old = Preprocess.from_dict({"input_size": [224, 224], "resize_shorter": 256, "crop": "center", "interpolation": "bicubic"})
    assert (old.crop_mode, old.crop_pct, old.scale_size, old.resize) == ("center", 0.875, (256, 256), "opencv")
    tflite = Preprocess.from_dict({"input_size": [128, 128], "resize_shorter": 128, "crop": "none"})
    assert (tflite.crop_mode, tflite.crop_pct, tflite.resize) == ("squash", 1.0, "opencv")
