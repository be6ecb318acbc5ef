"""An edgefg compress artifact is itself a model input (chained compress runs)."""
from __future__ import annotations

import json

import pytest

from edgefg.errors import ChecksumError, EdgefgError
from edgefg.models.loader import load_model


def test_artifact_folder_keeps_its_preprocessing_and_labels(tiny_artifacts):
    folder = tiny_artifacts["fp32"]
    manifest = json.loads((folder / "manifest.json").read_text())
    for path in (folder, folder / manifest["model_file"]):
        loaded = load_model(path)
        assert loaded.labels == manifest["labels"]
        assert list(loaded.preprocess.mean) == manifest["preprocess"]["mean"]
        assert list(loaded.preprocess.input_size) == manifest["preprocess"]["input_size"]
        assert loaded.onnx_path == folder / manifest["model_file"]
        assert loaded.source["type"] == "edgefg-artifact"


def test_tampered_artifact_is_refused(tiny_artifacts, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_artifacts["fp32"], tmp_path / "a")
    model = folder / json.loads((folder / "manifest.json").read_text())["model_file"]
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ChecksumError):
        load_model(folder)


def test_deployed_bundles_are_not_compress_inputs(tiny_bundles):
    formats = set()
    for bundle in tiny_bundles.values():  # OpenVINO IR and ONNX Runtime (an ONNX file, but a bundle)
        formats.add(json.loads((bundle / "manifest.json").read_text())["format"])
        with pytest.raises(EdgefgError, match="not an ONNX artifact"):
            load_model(bundle)
    assert "onnx" in formats


def test_artifact_loads_without_the_imagenet_fallback_warning(tiny_artifacts, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="edgefg.models.loader"):
        load_model(tiny_artifacts["fp32"])
    assert not [r for r in caplog.records if "config.json" in r.message]


def test_an_fp32_artifact_can_be_quantized_later(tiny_artifacts, image_folder, tmp_path):
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.manifest import load_manifest

    src = load_manifest(tiny_artifacts["fp32"])
    res = compress(load_model(tiny_artifacts["fp32"]), tmp_path / "int8", CompressOptions(recipe="int8", data=image_folder, calib_size=12, latency_iters=3))
    out = load_manifest(res.directory)
    assert out.precision == "int8"
    assert out.preprocess == src.preprocess and out.labels == src.labels
