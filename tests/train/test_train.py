"""edgefg train: a linear probe / fine-tune of a timm backbone on an ImageFolder, written as a hub folder
that the rest of the flow takes; bad input is one line."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.models.loader import load_model
from edgefg.train.api import TrainOptions, _split, choose_weight_decay, fit_linear_head, train_classifier
from tests.conftest import write_hub_folder, write_image_folder

NEW = ["Red_Cultivar", "Green_Cultivar", "Blue_Cultivar"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    # a backbone trained for other classes (4 outputs) that the new data (3 classes) replaces
    return write_hub_folder(tmp_path_factory.mktemp("bb") / "backbone", classes=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def new_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    return write_image_folder(root / "train", per_class=12, seed=1, classes=NEW), write_image_folder(root / "test", per_class=6, seed=2, classes=NEW)


def test_the_linear_head_fits_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(size=(60, 8)) * 0.3
    w, b = fit_linear_head(x, y, 3, 1e-4)
    assert w.shape == (3, 8) and b.shape == (3,)
    assert ((x @ w.T + b).argmax(1) == y).mean() == 1.0
    fit, held = _split(y, 0.25, 0)
    assert len(set(fit) & set(held)) == 0 and len(fit) + len(held) == 60
    assert all((y[held] == c).sum() == 5 for c in range(3))  # stratified
    wd, scores = choose_weight_decay(x, y, 3, TrainOptions())
    assert set(scores) == {f"{v:g}" for v in TrainOptions().weight_decays} and scores[f"{wd:g}"] == max(scores.values())


def test_linear_probe_writes_a_hub_folder_the_flow_takes(backbone, new_data, tmp_path):
    train, test = new_data
    out = tmp_path / "model"
    report = train_classifier(load_model(backbone), train, out, val_data=test)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label_names"] == sorted(NEW) and cfg["num_classes"] == 3 and cfg["architecture"] == "test_efficientnet"
    assert cfg["pretrained_cfg"]["num_classes"] == 3 and cfg["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]  # the backbone's preprocessing kept
    assert (out / "train.md").read_text().startswith("# edgefg train")
    saved = json.loads((out / "train.json").read_text())
    assert saved["val"]["top1"] == report["val"]["top1"] and set(saved["val"]["per_class"]) == set(NEW)
    # the written model is the trained one: reloaded, it gives the reported validation top-1
    reloaded = load_model(out)
    assert reloaded.labels == sorted(NEW)
    import torch

    from edgefg.calibration.dataset import iter_batches, scan

    hits = n = 0
    val = scan(test, reloaded.labels)
    for b in iter_batches(val.samples, reloaded.preprocess, 8):
        with torch.inference_mode():
            pred = reloaded.module(torch.from_numpy(b.x)).argmax(1).numpy()
        hits += int((pred == b.labels).sum())
        n += len(b.labels)
    assert hits / n == pytest.approx(report["val"]["top1"], abs=1e-4)
    assert report["val"]["top1"] > 1 / 3  # the stripe angle is learnable from frozen random features: above chance


def test_the_trained_folder_compresses(backbone, new_data, tmp_path):
    train, test = new_data
    out = tmp_path / "model"
    r = CliRunner().invoke(cli, ["train", str(backbone), "--data", str(train), "--val-data", str(test), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "val top-1" in r.output and "next: edgefg compress" in r.output
    r = CliRunner().invoke(cli, ["compress", str(out), "--data", str(train), "--recipe", "fp32", "-o", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["labels"] == sorted(NEW)


def test_finetune_starts_from_the_probe_and_trains(backbone, new_data, tmp_path):
    train, _ = new_data
    report = train_classifier(load_model(backbone), train, tmp_path / "ft", opts=TrainOptions(mode="finetune", epochs=1, batch_size=12))
    assert report["finetune"]["epochs"] == 1 and report["finetune"]["steps"] == 3  # 36 images / 12
    assert (tmp_path / "ft" / "model.safetensors").is_file()


def _fold_like_tflite(model):
    """Running statistics 0/1 in every BatchNorm, as in a BN-folded checkpoint (the model stays valid)."""
    for mod in model.module.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.zero_()
            mod.running_var.fill_(1.0)
    return model


@pytest.mark.parametrize("train_bn", [False, True])
def test_finetune_keeps_batchnorm_statistics_unless_told(backbone, new_data, tmp_path, train_bn):
    """With a vanishing learning rate a fine-tune must leave the probe's model as it was: BatchNorm in eval
    mode. --train-bn re-estimates the statistics from batches, which changes a BN-folded model (the shipped
    MobileNetV2s fell from 0.96 to 0.03 top-1 in one CPU epoch that way)."""
    train, _ = new_data
    probe = train_classifier(_fold_like_tflite(load_model(backbone)), train, tmp_path / "lp", opts=TrainOptions(batch_size=12))
    ft = train_classifier(_fold_like_tflite(load_model(backbone)), train, tmp_path / "ft",
                          opts=TrainOptions(mode="finetune", epochs=1, batch_size=12, lr=1e-12, train_bn=train_bn))
    assert probe["linear_probe"] == ft["linear_probe"]
    x = torch.randn(4, 3, *load_model(tmp_path / "lp").preprocess.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = load_model(tmp_path / "lp").module.eval()(x), load_model(tmp_path / "ft").module.eval()(x)
    if train_bn:
        assert not torch.allclose(a, b, atol=1e-3)
    else:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["one_class", "few_images", "no_classes", "val_class_unknown", "exists", "onnx"])
def test_bad_input_is_one_line_and_writes_nothing(backbone, new_data, tmp_path, case):
    train, test = new_data
    data, val, out, model = train, None, tmp_path / "out", backbone
    if case == "one_class":
        data = write_image_folder(tmp_path / "one", per_class=3, classes=["Only"])
    elif case == "few_images":
        data = write_image_folder(tmp_path / "few", per_class=1, classes=NEW)
    elif case == "no_classes":
        data = tmp_path / "flat"
        data.mkdir()
        shutil.copy(next((train / NEW[0]).iterdir()), data / "a.jpg")
    elif case == "val_class_unknown":
        val = write_image_folder(tmp_path / "v", per_class=2, classes=["Stranger", NEW[0]])
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "onnx":
        model = tmp_path / "m.onnx"
    args = ["train", str(model), "--data", str(data), "-o", str(out)] + (["--val-data", str(val)] if val else [])
    if case == "onnx":
        import torch

        loaded = load_model(backbone)  # an ONNX file of the backbone
        torch.onnx.export(loaded.module, torch.zeros(1, 3, 64, 64), str(model), dynamo=False)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    err = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.output, r.output
    if case == "exists":
        assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    else:
        assert not out.exists()
