import pickle

import pytest
import torch

from edgefg.errors import ClassMismatchError, InputPathError, ModelLoadError, UnsupportedError
from edgefg.models.loader import CheckpointSettings, load_model
from tests.conftest import CLASSES

TIMM_DEFAULTS = CheckpointSettings(timm_defaults=True)  # a bare checkpoint's settings, accepted from timm explicitly


def test_hub_folder(tiny_model):
    m = load_model(tiny_model)
    assert m.labels == CLASSES and m.arch == "test_efficientnet"
    assert m.preprocess.input_size == (64, 64) and m.preprocess.scale_size == (73, 73)  # 64 / 0.875
    assert m.preprocess.mean == (0.5, 0.5, 0.5)
    assert m.module(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_arch_plus_checkpoint_safetensors_and_pth(tiny_model, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(CLASSES))
    ref = load_model(tiny_model).module
    m = load_model(tiny_model / "model.safetensors", arch="test_efficientnet", labels=labels, checkpoint=TIMM_DEFAULTS)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(m.module(x), ref(x))
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pth")
    m2 = load_model(tmp_path / "w.pth", arch="test_efficientnet", num_classes=3, checkpoint=CheckpointSettings(config=tiny_model / "config.json"))
    torch.testing.assert_close(m2.module(x), ref(x))
    assert m2.labels == CLASSES and m2.preprocess == load_model(tiny_model).preprocess  # labels and preprocessing from --config


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh)
    with pytest.raises(ModelLoadError, match="weights_only"):
        load_model(path, arch="test_efficientnet", num_classes=3, checkpoint=TIMM_DEFAULTS)


def test_bad_models(tiny_model, tmp_path):
    with pytest.raises(InputPathError):
        load_model(tmp_path / "missing")
    corrupt = tmp_path / "c.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(corrupt, arch="test_efficientnet", num_classes=3, checkpoint=TIMM_DEFAULTS)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(tiny_model / "model.safetensors", arch="test_efficientnet", num_classes=5, checkpoint=TIMM_DEFAULTS)
    with pytest.raises(UnsupportedError, match="--arch"):
        load_model(tiny_model / "model.safetensors")
    with pytest.raises(UnsupportedError, match="not a timm architecture"):
        load_model(tiny_model / "model.safetensors", arch="no_such_net", num_classes=3)
    bad_onnx = tmp_path / "m.onnx"
    bad_onnx.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        load_model(bad_onnx)
    with pytest.raises(UnsupportedError, match="unsupported model file"):
        load_model(tiny_model / "config.json")
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ClassMismatchError, match="2 labels"):
        load_model(tiny_model, labels=labels)


def test_onnx_model_with_labels(tiny_artifacts, tmp_path):
    import shutil

    shutil.copy(tiny_artifacts["fp32"] / "model.onnx", tmp_path / "m.onnx")
    m = load_model(tmp_path / "m.onnx")  # no labels: named class_i, ImageNet preprocessing assumed
    assert m.labels == ["class_0", "class_1", "class_2"] and m.onnx_path is not None
    assert m.preprocess.input_size == (64, 64) and m.preprocess.mean == (0.485, 0.456, 0.406)
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES))
    assert load_model(tmp_path / "m.onnx").labels == CLASSES  # labels.txt beside the model


def test_pruned_hub_folder_rebuilds_its_layer_widths(tiny_model, tmp_path):
    """A pruned model travels as config.json (+ pruned_shapes) and a plain safetensors state dict."""
    import json
    import shutil

    import torch
    from safetensors.torch import save_file

    from edgefg.compress.prune import PruneOptions, prune, pruned_shapes
    from edgefg.errors import ModelLoadError

    model = load_model(tiny_model)
    size = tuple(model.preprocess.input_size)
    prune(model.module, size, PruneOptions(0.4))
    folder = tmp_path / "pruned"
    shutil.copytree(tiny_model, folder)
    save_file({k: v.contiguous() for k, v in model.module.state_dict().items()}, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="do not fit"):  # without the shapes the weights do not fit the architecture
        load_model(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "pruned_shapes": pruned_shapes(model.module)}))
    again = load_model(folder)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(again.module(x), model.module.eval()(x), atol=1e-5)
