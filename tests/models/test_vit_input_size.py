"""A ViT is built at the input size its config states (model_args img_size), and one that cannot take
that input is refused at load in one line, not deep inside an exporter."""
import json

import pytest

torch = pytest.importorskip("torch")

from edgefg.errors import ModelLoadError  # noqa: E402
from edgefg.models.loader import load_model  # noqa: E402
from tests.conftest import TINY_SIZE, write_hub_folder  # noqa: E402


def test_vit_hub_folder_is_built_at_its_config_input_size(tmp_path):
    folder = write_hub_folder(tmp_path / "vit", arch="test_vit")
    loaded = load_model(folder)
    assert loaded.preprocess.input_size == (TINY_SIZE, TINY_SIZE)
    assert tuple(loaded.module.patch_embed.img_size) == (TINY_SIZE, TINY_SIZE)  # position embeddings for the 4×4 grid, no resampling
    assert loaded.module.pos_embed.shape[1] == 1 + (TINY_SIZE // 16) ** 2


def test_static_vit_built_for_another_size_is_refused_in_one_line(tmp_path):
    import timm
    from safetensors.torch import save_file

    folder = write_hub_folder(tmp_path / "vit", arch="test_vit")
    model = timm.create_model("test_vit", num_classes=3, dynamic_img_size=False)  # a real ViT's static form, at timm's 160 px
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_args": {"dynamic_img_size": False}}))
    with pytest.raises(ModelLoadError, match=r"does not run on the 64×64 input its config states: AssertionError: Input height \(64\)") as err:
        load_model(folder)
    assert '"img_size": 64' in err.value.hint and "\n" not in err.value.message
