"""model_args in a model's config.json reach timm.create_model only for architecture/shape keys
(issue 26, class 7): a key that opens files or changes the model's outputs is a ModelLoadError naming it."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("timm")

from edgefg.errors import ModelLoadError  # noqa: E402
from edgefg.models.loader import MODEL_ARGS_ALLOWED, check_model_args, load_model  # noqa: E402
from tests.conftest import write_hub_folder  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return write_hub_folder(tmp_path_factory.mktemp("hub") / "tiny")


def with_model_args(hub, tmp_path, model_args):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(hub, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_args"] = model_args
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("key,value", [("checkpoint_path", "/etc/passwd"), ("pretrained", True), ("pretrained_cfg_overlay", {"file": "/etc/passwd"}),
                                       ("features_only", True), ("cache_dir", "/tmp"), ("__class__", 1)])
def test_a_rejected_key_is_named(hub, tmp_path, key, value):
    folder = with_model_args(hub, tmp_path, {"drop_rate": 0.1, key: value})
    with pytest.raises(ModelLoadError, match=f"model_args key '{key}' in config.json is not allowed"):
        load_model(folder)


def test_allowed_keys_build_and_bad_values_are_one_line(hub, tmp_path):
    model = load_model(with_model_args(hub, tmp_path, {"drop_rate": 0.0, "drop_path_rate": 0.0, "in_chans": 3}))
    assert model.module is not None
    with pytest.raises(ModelLoadError, match="must be an object"):
        check_model_args(["checkpoint_path"])
    with pytest.raises(ModelLoadError, match="must be a number"):
        check_model_args({"img_size": {"nested": 1}})
    assert {"img_size", "drop_rate", "drop_path_rate", "in_chans", "global_pool"} <= MODEL_ARGS_ALLOWED
    assert not {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "features_only"} & MODEL_ARGS_ALLOWED


def test_cli_exits_2_with_one_line(hub, tmp_path, image_folder):
    folder = with_model_args(hub, tmp_path, {"checkpoint_path": "/etc/passwd"})
    proc = subprocess.run([sys.executable, "-m", "edgefg", "compress", str(folder), "--data", str(image_folder), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "model_args key 'checkpoint_path'" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
