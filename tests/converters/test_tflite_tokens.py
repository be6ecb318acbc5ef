"""Token-reduced and adapted ViT artifacts deploy to rpi5 (LiteRT): compress keeps the ViT's weights
(pytorch/config.json + model.safetensors) and the wrapper's options and own tensors
(pytorch/graph_edit.json + graph_edit.safetensors), all checksummed; the TFLite converter rebuilds
the wrapper from them (no pickle), checks it against the artifact's ONNX and refuses edited files."""
import json

import numpy as np
import pytest

from edgefg.calibration.dataset import iter_batches, scan
from edgefg.deploy import deploy
from edgefg.errors import ChecksumError, ModelLoadError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.models.loader import ARTIFACT_TORCH_DIR, GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS, load_graph_edit, load_model
from edgefg.runtime.engine.bundle import LoadedBundle
from tests.conftest import write_hub_folder

pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")
from edgefg.converters.onnx_to_tflite import SOURCE_TOLERANCE  # noqa: E402
from tests.converters.test_tflite_pruned import _tampered  # noqa: E402  (one tampering helper for both files)

EDIT_FILES = {f"{ARTIFACT_TORCH_DIR}/{f}" for f in ("config.json", "model.safetensors", GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS)}


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory):
    return write_hub_folder(tmp_path_factory.mktemp("vit") / "model", arch="test_vit")


@pytest.fixture(scope="module")
def edited(tmp_path_factory, vit_model, image_folder):
    """FP32 artifacts: ToMe keep 0.5 + CLCA (a few fine-tuning steps) and one ILA adapter (a few steps)."""
    from edgefg.compress.api import CompressOptions, compress

    root = tmp_path_factory.mktemp("edited")
    common = dict(recipe="fp32", data=image_folder, calib_size=12, latency_iters=3, max_steps=2, plot=False)
    return {
        "tome-clca": compress(load_model(vit_model), root / "tome-clca", CompressOptions(token_keep=0.5, token_method="tome", clca=True, **common)).directory,
        "ila": compress(load_model(vit_model), root / "ila", CompressOptions(adapters="ila", adapter_at=[1], **common)).directory,
    }


def _relative(got, ref) -> float:
    """The converter's measure: max |difference| relative to the reference's logit range."""
    return float(np.abs(got - ref).max()) / max(float(np.ptp(ref)), 1e-6)


def _artifact_x(artifact, image_folder):
    m = load_manifest(artifact)
    return np.concatenate([b.x for b in iter_batches(scan(image_folder).samples, m.preprocess, 8)])


@pytest.mark.parametrize("which", ["tome-clca", "ila"])
def test_edited_artifact_keeps_what_rebuilds_its_wrapper(edited, image_folder, which):
    import torch

    art = edited[which]
    m = load_manifest(art)  # verifies every checksum
    assert EDIT_FILES <= set(m.files)
    spec = json.loads((art / ARTIFACT_TORCH_DIR / GRAPH_EDIT_CONFIG).read_text())
    assert spec["type"] == ("tokens" if which == "tome-clca" else "ila")
    base = load_model(art / ARTIFACT_TORCH_DIR).module
    x = _artifact_x(art, image_folder)
    with LoadedBundle(art) as a, torch.no_grad():
        ref = a.scores(x)
        assert _relative(base(torch.from_numpy(x)).numpy(), ref) > SOURCE_TOLERANCE  # the bare ViT is another model
        wrapped = load_graph_edit(base, art / ARTIFACT_TORCH_DIR)
        assert _relative(wrapped(torch.from_numpy(x)).numpy(), ref) <= SOURCE_TOLERANCE


@pytest.mark.parametrize("which", ["tome-clca", "ila"])
def test_edited_fp32_tflite_matches_the_artifact_onnx(edited, image_folder, tmp_path, which):
    bundle = deploy(edited[which], "rpi5", tmp_path / "b", precision="fp32", data=image_folder).directory
    m = load_manifest(bundle)
    assert (m.format, m.backend, m.target, m.precision, m.preprocess.layout) == ("tflite", "tflite", "rpi5", "fp32", "NHWC")
    assert "the artifact's PyTorch weights" in " ".join(m.compression[-1]["notes"])
    samples = scan(image_folder).samples
    with LoadedBundle(bundle) as b, LoadedBundle(edited[which]) as a:
        got = b.scores(np.concatenate([x.x for x in iter_batches(samples, b.manifest.preprocess, 8)]))
        ref = a.scores(np.concatenate([x.x for x in iter_batches(samples, a.manifest.preprocess, 8)]))
    assert _relative(got, ref) <= SOURCE_TOLERANCE and (got.argmax(1) == ref.argmax(1)).all()


def test_edited_wrapper_files_are_refused(edited, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    art = edited["tome-clca"]

    def other_carrier(folder, _):  # same shapes, other values: the rebuilt wrapper no longer equals the ONNX
        sd = load_file(str(folder / GRAPH_EDIT_WEIGHTS))
        save_file({**sd, "carrier": torch.randn(sd["carrier"].shape, generator=torch.Generator().manual_seed(0))}, str(folder / GRAPH_EDIT_WEIGHTS))

    def keep_more(folder, _):  # other options: another token plan
        spec = json.loads((folder / GRAPH_EDIT_CONFIG).read_text())
        spec["options"]["keep"] = 0.7
        (folder / GRAPH_EDIT_CONFIG).write_text(json.dumps(spec))

    with pytest.raises(ModelLoadError, match=r"PyTorch weights .* no longer matches the artifact .*relative difference"):
        deploy(_tampered(art, tmp_path, "carrier", other_carrier), "rpi5", tmp_path / "a")
    with pytest.raises(ModelLoadError, match=r"no longer matches the artifact"):
        deploy(_tampered(art, tmp_path, "keep", keep_more), "rpi5", tmp_path / "b")
    with pytest.raises(ChecksumError, match=GRAPH_EDIT_WEIGHTS):
        deploy(_tampered(art, tmp_path, "unrecorded", other_carrier, rehash=False), "rpi5", tmp_path / "c")

    def drop_head(folder, _):  # a tensor of the CLCA head missing: does not fit the wrapper
        sd = load_file(str(folder / GRAPH_EDIT_WEIGHTS))
        save_file({k: v for k, v in sd.items() if not k.startswith("cla_head.conv2")}, str(folder / GRAPH_EDIT_WEIGHTS))

    with pytest.raises(ModelLoadError, match=r"cannot be rebuilt: the tensors in .* do not fit the tokens wrapper"):
        deploy(_tampered(art, tmp_path, "nohead", drop_head), "rpi5", tmp_path / "d")

    def other_kind(folder, _):
        (folder / GRAPH_EDIT_CONFIG).write_text(json.dumps({"type": "pickle", "options": {}}))

    with pytest.raises(ModelLoadError, match="does not describe a token-reduction or adapter wrapper"):
        deploy(_tampered(art, tmp_path, "kind", other_kind), "rpi5", tmp_path / "e")

    def drop(folder, data):  # an artifact from before compress kept the wrapper's files
        for f in (GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS):
            (folder / f).unlink()
        data["files"] = {k: v for k, v in data["files"].items() if not k.endswith((GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS))}

    with pytest.raises(UnsupportedError, match=rf"changed by token-reduction-tome but holds no PyTorch weights .*{GRAPH_EDIT_CONFIG}"):
        deploy(_tampered(art, tmp_path, "old", drop), "rpi5", tmp_path / "f")

    unknown = _tampered(art, tmp_path, "unknown", lambda f, d: d["compression"].append({"step": "x", "method": "some-future-edit"}))
    with pytest.raises(UnsupportedError, match="changed by some-future-edit, which litert-torch cannot rebuild"):
        deploy(unknown, "rpi5", tmp_path / "g")
    assert not any((tmp_path / n).exists() for n in "abcdefg")


def test_a_vit_resampling_its_position_embeddings_is_refused_in_one_line(tmp_path, image_folder):
    """timm's test_vit resamples its position embeddings at every call (dynamic_img_size) when it is
    built for another size than it runs at; LiteRT cannot lower that op: a clear refusal, no traceback."""
    import timm
    import torch
    from safetensors.torch import save_file

    from edgefg.compress.api import CompressOptions, compress

    folder = write_hub_folder(tmp_path / "vit", arch="test_vit")  # built at 64 px, like its config
    torch.manual_seed(0)
    at_160 = timm.create_model("test_vit", num_classes=3)  # timm's default 160 px; config still says 64
    save_file({k: v.contiguous() for k, v in at_160.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_args": {}}))
    art = compress(load_model(folder), tmp_path / "art", CompressOptions(recipe="fp32", data=image_folder, calib_size=12, latency_iters=3, plot=False)).directory
    with pytest.raises(UnsupportedError, match=r"built for \(160, 160\) input and resamples its position embeddings to \(64, 64\)"):
        deploy(art, "rpi5", tmp_path / "b")
    assert not (tmp_path / "b").exists()
