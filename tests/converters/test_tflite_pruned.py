"""Pruned + distilled artifacts deploy to rpi5 (LiteRT): compress keeps the compressed PyTorch model
in the artifact (pytorch/: config.json with the pruned layer widths + model.safetensors), the TFLite
converter builds from it (not from the unpruned source), checks it against the artifact's ONNX and
refuses weights that do not match and artifacts without them (token-reduced ones: tests/converters/test_tflite_tokens.py)."""
import json
import shutil

import numpy as np
import pytest

from edgefg.calibration.dataset import iter_batches, scan
from edgefg.deploy import deploy
from edgefg.errors import ChecksumError, InputPathError, ModelLoadError, UnsupportedError
from edgefg.manifest import load_manifest, sha256_file
from edgefg.models.loader import ARTIFACT_TORCH_DIR, load_model
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.validate.metrics import parity

pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")
from edgefg.converters.onnx_to_tflite import INT8_SOURCE_TOLERANCE, SOURCE_TOLERANCE  # noqa: E402

PRUNE = dict(prune=0.3, max_steps=2, calib_size=12, latency_iters=3)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_model, image_folder):
    """Pruned + distilled (a few KD steps) artifacts of the tiny model: FP32, and INT8 (NNCF) on top."""
    from edgefg.compress.api import CompressOptions, compress

    root = tmp_path_factory.mktemp("pruned")
    return {r: compress(load_model(tiny_model), root / r, CompressOptions(recipe=r, data=image_folder, **PRUNE)).directory for r in ("fp32", "int8")}


@pytest.fixture(scope="module")
def pruned_bundles(tmp_path_factory, pruned, image_folder):
    """rpi5 bundles: fp32/fp16/int8 from the FP32 pruned artifact, int8 from the INT8 one."""
    root = tmp_path_factory.mktemp("pruned-tflite")
    out = {p: deploy(pruned["fp32"], "rpi5", root / p, precision=p, data=image_folder).directory for p in ("fp32", "fp16", "int8")}
    out["int8-artifact"] = deploy(pruned["int8"], "rpi5", root / "int8-artifact", precision="int8", data=image_folder).directory
    return out


def _scores(bundle, artifact, image_folder):
    """Bundle (LiteRT) and artifact (ONNX) scores on the same images, each prepared by its own manifest."""
    samples = scan(image_folder).samples
    with LoadedBundle(bundle) as b, LoadedBundle(artifact) as a:
        assert b.manifest.backend == "tflite" and a.manifest.format == "onnx"
        xb = np.concatenate([x.x for x in iter_batches(samples, b.manifest.preprocess, 8)])
        xa = np.concatenate([x.x for x in iter_batches(samples, a.manifest.preprocess, 8)])
        return b.scores(xb), a.scores(xa)


def _relative(got, ref) -> float:
    """The converter's measure: max |difference| relative to the reference's logit range."""
    return float(np.abs(got - ref).max()) / max(float(np.ptp(ref)), 1e-6)


def test_pruned_artifact_keeps_its_pytorch_weights(pruned, tiny_model, image_folder):
    import torch

    m = load_manifest(pruned["fp32"])
    assert [c["method"] for c in m.compression] == ["structured-pruning", "distillation"]
    assert {f"{ARTIFACT_TORCH_DIR}/config.json", f"{ARTIFACT_TORCH_DIR}/model.safetensors"} <= set(m.files)  # checksummed
    cfg = json.loads((pruned["fp32"] / ARTIFACT_TORCH_DIR / "config.json").read_text())
    assert cfg["pruned_shapes"] and cfg["label_names"] == m.labels
    rebuilt, original = load_model(pruned["fp32"] / ARTIFACT_TORCH_DIR).module, load_model(tiny_model).module
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in original.parameters())
    x = np.concatenate([b.x for b in iter_batches(scan(image_folder).samples, m.preprocess, 8)])
    with LoadedBundle(pruned["fp32"]) as art, torch.no_grad():
        ref = art.scores(x)
        assert _relative(rebuilt(torch.from_numpy(x)).numpy(), ref) <= SOURCE_TOLERANCE
        assert _relative(original(torch.from_numpy(x)).numpy(), ref) > SOURCE_TOLERANCE  # the unpruned source is another model


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pruned_float_tflite_matches_the_pruned_onnx(pruned_bundles, pruned, image_folder, precision):
    m = load_manifest(pruned_bundles[precision])
    assert (m.format, m.target, m.precision, m.preprocess.layout) == ("tflite", "rpi5", precision, "NHWC")
    assert "PyTorch weights" in " ".join(m.compression[-1]["notes"])
    got, ref = _scores(pruned_bundles[precision], pruned["fp32"], image_folder)
    if precision == "fp32":
        assert _relative(got, ref) <= SOURCE_TOLERANCE
    else:  # float16 weights: rounded, same predictions
        p = parity(got, ref)
        assert p["cosine_min"] > 0.999 and p["top1_agreement"] == 1.0, p


@pytest.mark.parametrize("which, artifact", [("int8", "fp32"), ("int8-artifact", "int8")])
def test_pruned_int8_tflite_is_integer_and_close_to_the_pruned_onnx(pruned_bundles, pruned, image_folder, which, artifact):
    m = load_manifest(pruned_bundles[which])
    assert (m.format, m.target, m.precision, m.preprocess.dtype, m.outputs[0].dtype) == ("tflite", "rpi5", "int8", "int8", "int8")
    got, ref = _scores(pruned_bundles[which], pruned[artifact], image_folder)
    p = parity(got, ref)
    assert _relative(got, ref) <= INT8_SOURCE_TOLERANCE and p["cosine_min"] > 0.98 and p["top1_agreement"] >= 0.8, p


def test_int8_compressed_from_a_pruned_artifact_deploys_from_its_weights(pruned, image_folder, tmp_path):
    """prune + distil now, INT8 later (compress an artifact): built from the first artifact's weights."""
    from edgefg.compress.api import CompressOptions, compress

    later = compress(load_model(pruned["fp32"]), tmp_path / "later", CompressOptions(recipe="int8", data=image_folder, calib_size=12, latency_iters=3)).directory
    assert load_manifest(later).source["type"] == "edgefg-artifact" and not (later / ARTIFACT_TORCH_DIR).exists()
    bundle = deploy(later, "rpi5", tmp_path / "b", precision="int8", data=image_folder).directory
    notes = " ".join(load_manifest(bundle).compression[-1]["notes"])
    assert f"'{pruned['fp32'] / ARTIFACT_TORCH_DIR}'" in notes
    got, ref = _scores(bundle, later, image_folder)
    assert _relative(got, ref) <= INT8_SOURCE_TOLERANCE

    moved = tmp_path / "moved"
    shutil.copytree(later, moved)
    data = json.loads((moved / "manifest.json").read_text())
    data["source"]["path"] = str(tmp_path / "nowhere")
    (moved / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputPathError, match="compressed from the artifact .* which is gone"):
        deploy(moved, "rpi5", tmp_path / "c", precision="int8", data=image_folder)


def _tampered(artifact, tmp_path, name, edit, rehash=True):
    """A copy of ``artifact`` whose pytorch/ folder ``edit`` changes; checksums re-recorded unless ``rehash`` is off."""
    copy = tmp_path / name
    shutil.copytree(artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    edit(copy / ARTIFACT_TORCH_DIR, data)
    if rehash:
        data["files"] = {k: sha256_file(copy / k) for k in data["files"] if (copy / k).is_file()}
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


def test_mismatched_or_missing_weights_are_refused(pruned, tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    def scale_head(folder, _):  # same shapes, other values: the rebuilt module no longer equals the ONNX
        sd = load_file(str(folder / "model.safetensors"))
        head = [k for k in sd if k.endswith("weight") and sd[k].ndim == 2][-1]
        save_file({**sd, head: sd[head] * 3.0}, str(folder / "model.safetensors"))

    edited = _tampered(pruned["fp32"], tmp_path, "edited", scale_head)
    with pytest.raises(ModelLoadError, match=r"PyTorch weights .* no longer matches the artifact .*relative difference"):
        deploy(edited, "rpi5", tmp_path / "a")
    edited_int8 = _tampered(pruned["int8"], tmp_path, "edited_int8", scale_head)
    with pytest.raises(ModelLoadError, match=r"no longer matches the artifact .*int8"):  # the coarse INT8 check still catches it
        deploy(edited_int8, "rpi5", tmp_path / "b", precision="int8")

    unpruned = _tampered(pruned["fp32"], tmp_path, "unpruned", lambda f, _: shutil.copy2(tiny_model / "model.safetensors", f / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"PyTorch weights .* cannot be rebuilt: weights .* do not fit"):
        deploy(unpruned, "rpi5", tmp_path / "c")

    unrecorded = _tampered(pruned["fp32"], tmp_path, "unrecorded", scale_head, rehash=False)
    with pytest.raises(ChecksumError, match="model.safetensors"):
        deploy(unrecorded, "rpi5", tmp_path / "d")

    def drop(folder, data):  # an artifact from before compress kept its PyTorch weights
        shutil.rmtree(folder)
        data["files"] = {k: v for k, v in data["files"].items() if not k.startswith(f"{ARTIFACT_TORCH_DIR}/")}

    old = _tampered(pruned["fp32"], tmp_path, "old", drop)
    with pytest.raises(UnsupportedError, match="changed by structured-pruning, distillation but holds no PyTorch weights"):
        deploy(old, "rpi5", tmp_path / "e")

    tokens = _tampered(pruned["fp32"], tmp_path, "tokens", lambda f, d: d["compression"].append({"step": "tokens", "method": "token-reduction-evit"}))
    with pytest.raises(UnsupportedError, match="changed by structured-pruning, distillation, token-reduction-evit but holds no PyTorch weights .*graph_edit.json"):
        deploy(tokens, "rpi5", tmp_path / "f")
    assert not any((tmp_path / n).exists() for n in "abcdef")


def test_pruned_vit_heads_survive_the_saved_shapes(tmp_path):
    """Head pruning changes the count ViT attention reshapes by: the saved shapes carry it."""
    import timm
    import torch

    from edgefg.compress.prune import PruneOptions, apply_shapes, prune, pruned_shapes

    torch.manual_seed(0)
    m = timm.create_model("test_vit", num_classes=3, img_size=64).eval()
    prune(m, (64, 64), PruneOptions(0.5))
    shapes = json.loads(json.dumps(pruned_shapes(m)))
    rebuilt = timm.create_model("test_vit", num_classes=3, img_size=64).eval()
    apply_shapes(rebuilt, shapes)
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    assert [b.attn.num_heads for b in rebuilt.blocks] == [b.attn.num_heads for b in m.blocks]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), m(x), atol=1e-5)
