"""Hostile bundles: every malformed or escaping manifest, every symlink trick is refused with exit 2 and
one line naming the problem — before the model is loaded — by run, validate, bench and install."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefg.errors import BundleError
from edgefg.manifest import load_manifest, sha256_file
from edgefg.runtime.install import install_bundle
from tests.trust.conftest import edgefg, make_bundle, one_line_error, write_onnx


def _edit(bundle: Path, fn: Callable[[dict[str, Any]], Any]) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def fn(m: dict) -> None:
        keys = path.split(".")
        node = m
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return fn


def _drop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key)


def _deep(m: dict) -> None:
    node: dict = {}
    m["accuracy"] = node
    for _ in range(100):
        node["x"] = {}
        node = node["x"]


# (case id, mutation, text the one-line error must contain)
MANIFEST_CASES = [
    ("absolute-model-file", _set("model_file", "/etc/passwd"), "model_file"),
    ("dotdot-model-file", _set("model_file", "../outside/model.onnx"), "model_file"),
    ("backslash-name", _set("model_file", "..\\model.onnx"), "model_file"),
    ("model-not-listed", _set("model_file", "other.onnx"), "model_file"),
    ("dotdot-in-files", lambda m: m["files"].update({"../x": "0" * 64}), "files"),
    ("absolute-in-files", lambda m: m["files"].update({"/etc/shadow": "0" * 64}), "files"),
    ("bad-hash", lambda m: m["files"].update({"model.onnx": "xyz"}), "files.model.onnx"),
    ("labels-null", _set("labels", None), "labels"),
    ("labels-empty", _set("labels", []), "labels"),
    ("labels-not-strings", _set("labels", [1, 2]), "labels[0]"),
    ("label-count-vs-output", _set("labels", ["a", "b", "c"]), "labels"),
    ("labels-missing", _drop("labels"), "labels"),
    ("std-zero", _set("preprocess.std", [0, 0.2, 0.2]), "preprocess.std[0]"),
    ("std-negative", _set("preprocess.std.1", -1), "preprocess.std[1]"),
    ("std-nan", _set("preprocess.std.2", float("nan")), "preprocess.std[2]"),
    ("mean-infinite", _set("preprocess.mean.0", float("inf")), "preprocess.mean[0]"),
    ("std-string", _set("preprocess.std", "0.2"), "preprocess.std"),
    ("mean-two-values", _set("preprocess.mean", [0.5, 0.5]), "preprocess.mean"),
    ("input-size-zero", _set("preprocess.input_size", [0, 16]), "preprocess.input_size[0]"),
    ("input-size-huge", _set("preprocess.input_size", [100000, 16]), "preprocess.input_size[0]"),
    ("input-size-float", _set("preprocess.input_size", [16.5, 16]), "preprocess.input_size[0]"),
    ("input-size-vs-model", _set("preprocess.input_size", [32, 32]), "preprocess.input_size"),
    ("crop-pct-zero", _set("preprocess.crop_pct", 0), "preprocess.crop_pct"),
    ("crop-pct-above-one", _set("preprocess.crop_pct", 1.5), "preprocess.crop_pct"),
    ("crop-mode-unknown", _set("preprocess.crop_mode", "random"), "preprocess.crop_mode"),
    ("resize-unknown", _set("preprocess.resize", "ffmpeg"), "preprocess.resize"),
    ("interpolation-unknown", _set("preprocess.interpolation", "lanczos9"), "preprocess.interpolation"),
    ("layout-unknown", _set("preprocess.layout", "CHWN"), "preprocess.layout"),
    ("dtype-unknown", _set("preprocess.dtype", "complex64"), "preprocess.dtype"),
    ("int8-without-quant", _set("preprocess.dtype", "int8"), "preprocess.quant_scale"),
    ("preprocess-unknown-field", _set("preprocess.gamma", 2.2), "preprocess"),
    ("preprocess-null", _set("preprocess", None), "preprocess"),
    ("backend-unknown", _set("backend", "pickle"), "backend"),
    ("precision-unknown", _set("precision", "int3"), "precision"),
    ("kind-unknown", _set("kind", "script"), "kind"),
    ("inputs-empty", _set("inputs", []), "inputs"),
    ("outputs-not-list", _set("outputs", {"name": "y"}), "outputs"),
    ("shape-nested", _set("outputs.0.shape", [[1], 2]), "outputs[0].shape[0]"),
    ("tensor-extra-field", _set("inputs.0.evil", 1), "inputs[0]"),
    ("name-too-long", _set("name", "n" * 5000), "name"),
    ("top-level-unknown", _set("exec", "rm -rf /"), "(top level)"),
    ("deep-nesting", _deep, "accuracy"),
    ("activation-unknown", _set("output_activation", "sigmoid!"), "output_activation"),
    ("versions-nested", _set("versions", {"x": {"y": 1}}), "versions.x"),
    ("files-not-object", _set("files", ["model.onnx"]), "files"),
]


@pytest.mark.parametrize("case,mutate,field", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_malformed_manifest_is_refused_naming_the_field(bundle, case, mutate, field):
    _edit(bundle, mutate)
    with pytest.raises(BundleError) as exc:
        load_manifest(bundle, verify=False)  # the schema is checked even without checksum verification
    msg = str(exc.value)
    assert "\n" not in msg and field in msg, msg


@pytest.mark.parametrize("case", ["absolute-model-file", "std-zero", "label-count-vs-output", "deep-nesting", "backend-unknown"])
def test_cli_refuses_malformed_manifests_with_exit_2(bundle, photos, case, tmp_path):
    mutate = next(c[1] for c in MANIFEST_CASES if c[0] == case)
    _edit(bundle, mutate)
    for cmd in (["run", bundle, "--source", photos], ["validate", bundle, "--data", photos], ["install", bundle, "--into", tmp_path / "dev"],
                ["bench", bundle, "--rounds", "1", "--iters", "1"]):
        line = one_line_error(edgefg(*cmd))
        assert "manifest.json field" in line, (cmd, line)


@pytest.mark.parametrize("text", ["", "[]", "null", "42", '"manifest"', "{not json", "[" * 100000, '{"schema_version": 1}', "\xff\xfe"])
def test_garbage_manifest_files(bundle, text):
    (bundle / "manifest.json").write_text(text, encoding="latin-1")
    with pytest.raises(BundleError):
        load_manifest(bundle, verify=False)


def test_oversized_manifest_is_not_read(bundle):
    with open(bundle / "manifest.json", "w") as fh:
        fh.write('{"labels": [' + ",".join(['"x"'] * 5_000_000) + "]}")
    with pytest.raises(BundleError, match="larger than"):
        load_manifest(bundle, verify=False)


def test_old_manifest_with_resize_shorter_and_crop_still_loads(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    pre = {k: v for k, v in m["preprocess"].items() if k not in ("crop_mode", "crop_pct", "resize", "border_fill")}
    m["preprocess"] = {**pre, "resize_shorter": pre["input_size"][0], "crop": "center"}  # what bundles made before crop modes carry
    (bundle / "manifest.json").write_text(json.dumps(m))
    loaded = load_manifest(bundle)
    assert (loaded.preprocess.crop_mode, loaded.preprocess.crop_pct, loaded.preprocess.resize) == ("center", 1.0, "opencv")


def test_symlinked_file_with_the_right_hash_is_refused(bundle, tmp_path):
    real = tmp_path / "elsewhere.onnx"
    shutil.move(bundle / "model.onnx", real)
    os.symlink(real, bundle / "model.onnx")
    assert sha256_file(bundle / "model.onnx") == json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]
    with pytest.raises(BundleError, match="symlink"):
        load_manifest(bundle)
    assert "symlink" in one_line_error(edgefg("run", bundle, "--source", bundle / "nothing.png"))


def test_symlinked_folder_inside_the_bundle_is_refused(tmp_path):
    b = make_bundle(tmp_path / "b")
    (tmp_path / "outside").mkdir()
    shutil.move(b / "model.onnx", tmp_path / "outside" / "model.onnx")
    os.symlink(tmp_path / "outside", b / "sub")
    _edit(b, lambda m: (m["files"].update({"sub/model.onnx": m["files"].pop("model.onnx")}), m.update(model_file="sub/model.onnx")))
    with pytest.raises(BundleError, match="symlink"):
        load_manifest(b)


def test_symlinked_manifest_is_refused(bundle, tmp_path):
    shutil.move(bundle / "manifest.json", tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", bundle / "manifest.json")
    with pytest.raises(BundleError, match="symlink"):
        load_manifest(bundle)


def test_bundle_directory_may_be_a_link(bundle, tmp_path):
    os.symlink(bundle, tmp_path / "current")  # DIR/current is one
    load_manifest(tmp_path / "current")


def test_install_copies_only_listed_files_and_never_follows_links(bundle, tmp_path):
    (bundle / "signing.key").write_text("PRIVATE KEY")  # next to the bundle by mistake
    (bundle / "notes").mkdir()
    (bundle / "notes" / "x.txt").write_text("x")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    os.symlink(secret, bundle / "link.txt")
    r = install_bundle(bundle, tmp_path / "dev")
    got = sorted(p.relative_to(r.release).as_posix() for p in r.release.rglob("*"))
    assert got == ["labels.txt", "manifest.json", "model.onnx"]


def test_wrap_refuses_external_data_outside_the_model_folder(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    model = write_onnx(tmp_path / "m" / "model.onnx", external="w.bin")
    shutil.move(tmp_path / "m" / "w.bin", tmp_path / "x")
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../x"
    onnx.save(proto, str(model))
    (tmp_path / "m" / "labels.txt").write_text("a\nb\n")
    out = tmp_path / "out" / "b"
    line = one_line_error(edgefg("deploy", model, "--target", "onnxruntime-cpu", "-o", out, "--input-size", "16", "16"))
    assert "outside its folder" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written, nothing outside -o
    # a symlink beside the model pointing out of the folder is refused the same way
    proto2 = onnx.load(str(model), load_external_data=False)
    for t in proto2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "w.bin"
    onnx.save(proto2, str(model))
    os.symlink(tmp_path / "x", tmp_path / "m" / "w.bin")
    assert "outside its folder" in one_line_error(edgefg("deploy", model, "--target", "onnxruntime-cpu", "-o", out, "--input-size", "16", "16"))


def test_wrap_with_external_data_inside_the_folder_works(tmp_path):
    pytest.importorskip("onnxruntime")
    model = write_onnx(tmp_path / "m" / "model.onnx", external="w.bin")
    (tmp_path / "m" / "labels.txt").write_text("a\nb\n")
    ok = edgefg("deploy", model, "--target", "onnxruntime-cpu", "-o", tmp_path / "b", "--input-size", "16", "16")
    assert ok.returncode == 0, ok.stderr
    assert set(load_manifest(tmp_path / "b").files) >= {"model.onnx", "w.bin"}


def test_schema_covers_every_manifest_field():
    """A field added to Manifest/Preprocess/TensorSpec must be added to edgefg/trust/schema.py too
    (additionalProperties is false: an unknown field is refused)."""
    import dataclasses

    from edgefg.manifest import Manifest, Preprocess, TensorSpec
    from edgefg.trust.schema import PREPROCESS_FIELDS, TENSOR_FIELDS, manifest_schema

    assert {f.name for f in dataclasses.fields(Manifest)} == set(manifest_schema()["properties"])
    assert {f.name for f in dataclasses.fields(Preprocess)} <= set(PREPROCESS_FIELDS)
    assert {f.name for f in dataclasses.fields(TensorSpec)} == set(TENSOR_FIELDS)


def test_listed_fifo_or_folder_is_refused_without_hanging(bundle):
    """A FIFO named like a listed file would block the checksum read forever; a folder is not a file."""
    (bundle / "labels.txt").unlink()
    os.mkfifo(bundle / "labels.txt")
    with pytest.raises(BundleError, match="not a regular file"):
        load_manifest(bundle)
    (bundle / "labels.txt").unlink()
    (bundle / "labels.txt").mkdir()
    with pytest.raises(BundleError, match="not a regular file"):
        load_manifest(bundle)


def test_unicode_and_odd_but_safe_names_are_fine(tmp_path):
    b = make_bundle(tmp_path / "b", labels=("Äpfel", "naïve bird / 2", "  spaced  "))
    assert load_manifest(b).labels[1] == "naïve bird / 2"
