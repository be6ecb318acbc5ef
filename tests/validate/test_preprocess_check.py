"""edgefg's preprocessing against timm's own eval transform, image by image (issue: preprocessing fidelity).

Tolerance: with the ``pil`` resizer the tensors must agree to float rounding (< 0.01 grey levels);
``opencv`` is a declared approximation and is only checked to be reported, not to be exact.
"""
import itertools

import cv2
import numpy as np
import pytest

from edgefg.errors import UnsupportedError
from edgefg.models.loader import preprocess_from_cfg
from edgefg.validate.preprocess_check import PreprocessMismatch, check_preprocess, config_differences

timm = pytest.importorskip("timm")

SHAPES = [(300, 200), (200, 300), (64, 64), (50, 41), (227, 227), (97, 333)]  # wide, tall, square, upscaled, odd


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SHAPES):
        # smooth structure + noise: exercises both the kernel and the antialiasing
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 3 + yy) % 256, (yy * 5) % 256, (xx * yy) % 256], -1).astype(np.float32)
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        p = root / f"{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def model_cfg(**overlay):
    """A real timm model's resolved eval config with ``overlay`` in its pretrained_cfg."""
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3, pretrained_cfg_overlay=overlay)
    return model, timm.data.resolve_data_config({}, model=model, use_test_size=True)


@pytest.mark.parametrize(
    "crop_mode,interpolation,crop_pct,size",
    [(m, i, c, s) for m, i, c, s in itertools.product(["center", "squash", "border"], ["bilinear", "bicubic"], [0.875, 1.0], [(64, 64)])]
    + [("center", "nearest", 0.9, (64, 64)), ("center", "lanczos", 0.95, (64, 64)), ("center", "bicubic", 0.875, (48, 80)),
       ("squash", "bilinear", 0.8, (72, 40)), ("border", "bicubic", 0.9, (40, 72))],
)
def test_pil_resizer_reproduces_timm(images, crop_mode, interpolation, crop_pct, size):
    _, cfg = model_cfg(crop_mode=crop_mode, interpolation=interpolation, crop_pct=crop_pct, input_size=(3, *size),
                       mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    spec = preprocess_from_cfg(cfg)
    assert (spec.crop_mode, spec.interpolation, spec.crop_pct, spec.input_size, spec.resize) == (crop_mode, interpolation, crop_pct, size, "pil")
    check = check_preprocess(spec, images, model_config=cfg)
    assert check.max_abs < 0.01, check.summary()  # float rounding only
    assert check.passed and not check.differing


def test_test_input_size_and_test_crop_pct_are_used():
    _, cfg = model_cfg(input_size=(3, 64, 64), test_input_size=(3, 80, 80), crop_pct=0.875, test_crop_pct=1.0)
    spec = preprocess_from_cfg(cfg)
    assert spec.input_size == (80, 80) and spec.crop_pct == 1.0


def test_opencv_resizer_is_reported_not_gated(images):
    _, cfg = model_cfg(crop_mode="squash", interpolation="bicubic", crop_pct=1.0, input_size=(3, 64, 64))
    spec = preprocess_from_cfg(cfg, resize="opencv")
    check = check_preprocess(spec, images, model_config=cfg)
    assert check.max_abs > 1.0  # a different kernel: clearly visible, and said so
    assert check.passed and "approximation" in check.summary()


def test_a_centre_crop_of_a_squash_model_is_refused_with_the_option(images):
    """The silent failure this check exists for: a squash model run with a centre crop."""
    _, cfg = model_cfg(crop_mode="squash", crop_pct=1.0, input_size=(3, 64, 64))
    spec = preprocess_from_cfg(cfg)
    spec.crop_mode = "center"  # e.g. an override, or an older edgefg
    check = check_preprocess(spec, images, model_config=cfg)
    assert not check.passed and check.differing == ["crop_mode: edgefg 'center', model 'squash'"]
    with pytest.raises(PreprocessMismatch, match="crop_mode") as err:
        check.raise_if_failed()
    assert err.value.exit_code == 2 and "--crop-mode" in err.value.hint


def test_model_agreement_is_measured(images):
    import torch

    model, cfg = model_cfg(crop_mode="border", input_size=(3, 64, 64))
    model.eval()
    spec = preprocess_from_cfg(cfg)

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    check = check_preprocess(spec, images, model_config=cfg, predict=predict)
    assert check.top1_agreement == 1.0


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"crop_mode": "letterbox"}, "crop_mode 'letterbox'"),
        ({"interpolation": "random"}, "interpolation 'random'"),
        ({"input_size": (1, 64, 64)}, "1-channel"),
        ({"crop_border_pixels": 4}, "crop_border_pixels"),
        ({"crop_pct": 1.2}, "crop_pct"),
    ],
)
def test_options_edgefg_cannot_honour_are_errors(cfg, match):
    with pytest.raises(UnsupportedError, match=match) as err:
        preprocess_from_cfg(cfg)
    assert err.value.hint  # names the flag to pass


def test_box_interpolation_needs_the_pil_resizer():
    with pytest.raises(UnsupportedError, match="opencv resizer") as err:
        preprocess_from_cfg({"interpolation": "box"}, resize="opencv")
    assert "--resize pil" in err.value.hint


def test_config_differences_lists_each_option():
    spec = preprocess_from_cfg({"input_size": (3, 64, 64), "crop_pct": 1.0, "mean": (0.5,) * 3, "std": (0.5,) * 3})
    diffs = config_differences(spec, {"input_size": (3, 64, 64), "crop_pct": 0.875, "interpolation": "bilinear",
                                      "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_mode": "center"})
    assert diffs == ["crop_pct: edgefg 1.0, model 0.875"]


# -- through the CLI ---------------------------------------------------------------------------
def test_compress_records_the_check_and_refuses_a_mismatch(tmp_path, tiny_model, image_folder):
    import json

    from click.testing import CliRunner

    from edgefg.cli import cli

    out = tmp_path / "art"
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--latency-iters", "2",
                                 "--no-plot", "-o", str(out)])
    assert r.exit_code == 0, r.output
    check = json.loads((out / "report.json").read_text())["preprocess"]["check"]
    assert check["passed"] and check["exact"] and check["max_abs"] < 0.01 and check["top1_agreement"] == 1.0
    assert "Preprocessing vs timm's own transform" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocess"]["resize"] == "pil" and manifest["source"]["data_config"]["crop_mode"] == "center"

    bad = tmp_path / "bad"
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--crop-mode", "squash",
                                 "-o", str(bad)])
    assert r.exit_code == 2 and "crop_mode: edgefg 'squash', model 'center'" in r.output and not bad.exists()
    assert "--crop-mode" in r.output


def test_validate_check_preprocess(tmp_path, tiny_bundles, image_folder):
    import json

    from click.testing import CliRunner

    from edgefg.cli import cli

    bundle = next(iter(tiny_bundles.values()))
    js = tmp_path / "v.json"
    r = CliRunner().invoke(cli, ["validate", str(bundle), "--data", str(image_folder), "--check-preprocess", "--check-images", "8",
                                 "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert res["preprocess_check"]["images"] == 8 and res["preprocess_check"]["passed"]
    assert [c["name"] for c in res["checks"]] == ["preprocess_parity"]
    assert "Preprocessing: preprocessing vs timm" in r.output


def test_border_model_through_openvino_embedded_preprocessing(tmp_path, image_folder):
    """A border-mode model keeps its mean-colour padding when OpenVINO takes over normalisation."""
    import json

    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.models.loader import load_model
    from edgefg.validate.api import validate
    from tests.conftest import write_hub_folder

    folder = write_hub_folder(tmp_path / "border")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretrained_cfg"].update(crop_mode="border", crop_pct=1.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    art = compress(load_model(folder), tmp_path / "art", CompressOptions(recipe="fp32", data=image_folder, latency_iters=2, plot=False)).directory
    bundle = deploy(art, "intel-cpu", tmp_path / "ov", options={"embed_preprocess": True}).directory
    pre = json.loads((bundle / "manifest.json").read_text())["preprocess"]
    assert pre["crop_mode"] == "border" and pre["dtype"] == "uint8" and pre["border_fill"] == [128, 128, 128]
    res = validate(bundle, image_folder, reference=art, check_preprocess=8)
    assert res["preprocess_check"]["passed"] and res["preprocess_check"]["top1_agreement"] == 1.0
    assert res["agreement"] > 0.99


def test_litert_nhwc_int8_input(tflite_bundles, image_folder):
    from edgefg.validate.api import validate

    res = validate(tflite_bundles["int8"], image_folder, check_preprocess=8)
    assert res["preprocess_check"]["passed"]


def test_a_different_input_size_is_reported_not_a_crash(images):
    import dataclasses

    _, cfg = model_cfg(input_size=(3, 64, 64))
    spec = dataclasses.replace(preprocess_from_cfg(cfg), input_size=(48, 48))
    check = check_preprocess(spec, images[:2], model_config=cfg)
    assert check.differing == ["input_size: edgefg (48, 48), model (64, 64)"] and not check.passed
