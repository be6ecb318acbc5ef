"""A bare checkpoint keeps its preprocessing: what its weights do not say comes from --config and/or explicit
values, or from an explicit --timm-defaults; anything still unknown is refused (exit 2, one line naming it).
Whatever was used is recorded in the artifact, and the three routes give the hub folder's model exactly."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.errors import InputPathError, ModelLoadError, UnsupportedError
from edgefg.models.checkpoint import BARE_PREPROCESS_KEYS, TIMM_DEFAULT, CheckpointSettings
from edgefg.models.loader import load_model
from tests.conftest import CLASSES, TINY_SIZE

ARCH = "test_efficientnet"  # its timm builder takes pad_type, and timm's defaults for it differ from the tiny model's config
ALL_UNKNOWN = [*BARE_PREPROCESS_KEYS, "pad_type"]


def unknown(exc: pytest.ExceptionInfo) -> list[str]:
    """The settings a refusal names as unknown."""
    m = re.search(r"gives its (.*?); edgefg does not guess", str(exc.value))
    assert m, str(exc.value)
    return [k.strip() for k in re.split(r",| and ", m.group(1)) if k.strip()]


@pytest.fixture(scope="module")
def bare(tiny_model, tmp_path_factory):
    """The tiny hub folder's weights alone, and its config.json under another name elsewhere."""
    root = tmp_path_factory.mktemp("bare")
    shutil.copy2(tiny_model / "model.safetensors", root / "weights.safetensors")
    shutil.copy2(tiny_model / "config.json", root / "my-config.json")
    return root


def explicit_of(hub) -> CheckpointSettings:
    """The hub folder's own preprocessing, given as explicit values (what a user reads off a model card)."""
    pre = hub.preprocess
    return CheckpointSettings(mean=pre.mean, std=pre.std, crop_pct=pre.crop_pct, interpolation=pre.interpolation, input_size=pre.input_size,
                              pad_type="symmetric")


def same_model(a, b) -> None:
    assert a.preprocess == b.preprocess and a.labels == b.labels and a.arch == b.arch
    x = torch.randn(2, 3, *a.preprocess.input_size)
    with torch.no_grad():
        torch.testing.assert_close(a.module(x), b.module(x))


def test_nothing_given_is_refused_naming_every_unknown_setting_and_timms_defaults(bare):
    timm = pytest.importorskip("timm")
    with pytest.raises(UnsupportedError) as exc:
        load_model(bare / "weights.safetensors", arch=ARCH, num_classes=3)
    assert unknown(exc) == ALL_UNKNOWN
    text = str(exc.value)
    assert "--config" in text and "--timm-defaults" in text and "--pad-type" in text and "--model-input-size" in text
    d = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(ARCH).to_dict())
    assert f"crop_pct {d['crop_pct']:g}" in text and f"interpolation {d['interpolation']}" in text  # what --timm-defaults would take


def test_only_what_is_still_unknown_is_named(bare, tiny_model):
    hub = load_model(tiny_model)
    with pytest.raises(UnsupportedError) as exc:
        load_model(bare / "weights.safetensors", arch=ARCH, num_classes=3, checkpoint=CheckpointSettings(mean=hub.preprocess.mean, std=hub.preprocess.std))
    assert unknown(exc) == ["crop_pct", "interpolation", "input_size", "pad_type"]
    assert exc.value.hint.startswith("pass --config config.json (the model's timm/HF hub config), or --crop-pct F")  # only the flags still needed


def test_an_architecture_without_pad_type_is_not_asked_for_one(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=3).state_dict(), str(tmp_path / "r.safetensors"))
    with pytest.raises(UnsupportedError) as exc:
        load_model(tmp_path / "r.safetensors", arch="resnet10t", num_classes=3)
    assert unknown(exc) == list(BARE_PREPROCESS_KEYS)


def test_config_gives_the_hub_folders_model(bare, tiny_model):
    hub = load_model(tiny_model)
    m = load_model(bare / "weights.safetensors", checkpoint=CheckpointSettings(config=bare / "my-config.json"))
    same_model(m, hub)  # architecture, classes and label names from the config too
    assert m.source["type"] == "timm-checkpoint" and m.source["config"] == str(bare / "my-config.json")
    assert m.source["data_config"] == hub.source["data_config"] and m.source["model_args"] == hub.source["model_args"]
    assert set(m.source["settings"].values()) == {"config"}


def test_explicit_values_give_the_hub_folders_model(bare, tiny_model):
    hub = load_model(tiny_model)
    m = load_model(bare / "weights.safetensors", arch=ARCH, labels=CLASSES, checkpoint=explicit_of(hub))
    same_model(m, hub)
    assert m.source["settings"] == {"mean": "--mean", "std": "--std", "crop_pct": "--crop-pct", "interpolation": "--interpolation",
                                    "input_size": "--model-input-size", "pad_type": "--pad-type"}


def test_pad_type_reaches_the_model(bare, tiny_model):
    hub = load_model(tiny_model)
    same = load_model(bare / "weights.safetensors", arch=ARCH, labels=CLASSES, checkpoint=dataclasses.replace(explicit_of(hub), pad_type="same"))
    assert same.source["model_args"] == {"pad_type": "same"} and hub.source["model_args"] == {}
    x = torch.randn(1, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        assert not torch.allclose(same.module(x), hub.module(x))  # TF 'same' padding is another function of the same weights


def test_an_explicit_value_wins_over_the_config(bare):
    m = load_model(bare / "weights.safetensors", checkpoint=CheckpointSettings(config=bare / "my-config.json", crop_pct=1.0, interpolation="bicubic"))
    assert m.preprocess.crop_pct == 1.0 and m.preprocess.interpolation == "bicubic" and m.preprocess.mean == (0.5, 0.5, 0.5)
    assert m.source["settings"]["crop_pct"] == "--crop-pct" and m.source["settings"]["mean"] == "config"


def test_timm_defaults_is_an_explicit_opt_in_and_is_recorded(bare):
    timm = pytest.importorskip("timm")
    m = load_model(bare / "weights.safetensors", arch=ARCH, num_classes=3, checkpoint=CheckpointSettings(timm_defaults=True, mean=(0.5, 0.5, 0.5)))
    d = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(ARCH).to_dict())
    assert m.preprocess.crop_pct == d["crop_pct"] and m.preprocess.interpolation == d["interpolation"] and m.preprocess.std == tuple(d["std"])
    assert m.preprocess.input_size == tuple(d["input_size"][1:]) and m.preprocess.mean == (0.5, 0.5, 0.5)
    assert m.source["settings"] == {"mean": "--mean", **{k: TIMM_DEFAULT for k in ALL_UNKNOWN if k != "mean"}}


def test_a_config_without_preprocessing_does_not_fill_it_in(bare, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"architecture": ARCH, "num_classes": 3, "label_names": CLASSES}))
    with pytest.raises(UnsupportedError) as exc:
        load_model(bare / "weights.safetensors", checkpoint=CheckpointSettings(config=cfg))
    assert unknown(exc) == list(BARE_PREPROCESS_KEYS)  # a config's model_args are as it says (no pad_type: the builder's)
    assert "nor a flag" in exc.value.message and exc.value.hint.startswith("pass --mean R G B --std")  # not "pass --config" again


def test_bad_configs_and_contradictions_are_one_line_errors(bare, tiny_model, tmp_path):
    w = bare / "weights.safetensors"
    with pytest.raises(ModelLoadError, match="says architecture 'test_efficientnet'"):
        load_model(w, arch="mobilenetv2_050", checkpoint=CheckpointSettings(config=bare / "my-config.json"))
    with pytest.raises(InputPathError, match="does not exist"):
        load_model(w, checkpoint=CheckpointSettings(config=tmp_path / "missing.json"))
    for text, match in (("{not json", "not valid JSON"), ("[1, 2]", "not a timm config"),
                        (json.dumps({"architecture": ARCH, "num_classes": 3, "model_args": {"checkpoint_path": "/x"}}), "not allowed")):
        (tmp_path / "c.json").write_text(text)
        with pytest.raises(ModelLoadError, match=match):
            load_model(w, checkpoint=CheckpointSettings(config=tmp_path / "c.json"))
    with pytest.raises(UnsupportedError, match="architecture is unknown") as exc:
        load_model(w)
    assert "--config" in str(exc.value) and "--arch" in str(exc.value)
    with pytest.raises(UnsupportedError, match="describe a bare checkpoint"):  # a hub folder carries its own
        load_model(tiny_model, checkpoint=CheckpointSettings(mean=(0.5, 0.5, 0.5), timm_defaults=True))


def test_an_artifacts_source_rebuilds_the_same_model(bare, tiny_model):
    m = load_model(bare / "weights.safetensors", arch=ARCH, labels=CLASSES, checkpoint=explicit_of(load_model(tiny_model)))
    again = load_model(m.source["path"], arch=m.arch, labels=m.labels, model_args=m.source["model_args"], checkpoint=CheckpointSettings.from_source(m.source))
    same_model(again, m)


# -- the command line ---------------------------------------------------------------------------------


def test_compress_refuses_a_bare_checkpoint_with_nothing_given_in_one_line(bare, image_folder, tmp_path):
    r = CliRunner().invoke(cli, ["compress", str(bare / "weights.safetensors"), "--arch", ARCH, "--num-classes", "3", "--data", str(image_folder),
                                 "-o", str(tmp_path / "art")])
    assert r.exit_code == 2 and "Traceback" not in r.output and not (tmp_path / "art").exists()
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: 'weights.safetensors' is a bare checkpoint") and lines[1].startswith("hint: pass --config")
    from tests.test_hints import command_options, flag_problems

    assert flag_problems(r.output.replace("hint: pass", "edgefg compress"), command_options()) == []  # every flag it names is compress's


def test_tune_refuses_the_same_way(bare, image_folder, tmp_path):
    r = CliRunner().invoke(cli, ["tune", str(bare / "weights.safetensors"), "--arch", ARCH, "--num-classes", "3", "--mean", "0.5", "0.5", "0.5",
                                 "--data", str(image_folder), "--val-data", str(image_folder), "-t", "intel-cpu", "-o", str(tmp_path / "t")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "nothing gives its std, crop_pct, interpolation, input_size and pad_type" in r.output


def test_checkpoint_flags_on_a_hub_folder_are_refused(tiny_model, image_folder, tmp_path):
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--pad-type", "same", "--data", str(image_folder), "-o", str(tmp_path / "a")])
    assert r.exit_code == 2 and "--pad-type describe a bare checkpoint" in r.output and "Traceback" not in r.output


def test_compress_bare_with_config_or_flags_writes_the_hub_folders_artifact(bare, tiny_model, image_folder, tmp_path):
    """The three routes through the real command: the same preprocessing in the manifest, the same accuracy,
    and the origin of every setting in the manifest's source and in report.json."""
    hub = load_model(tiny_model)
    pre = hub.preprocess
    common = ["--recipe", "fp32", "--data", str(image_folder), "--latency-iters", "2", "--no-plot"]
    flags = ["--arch", ARCH, "--num-classes", "3", "--mean", *map(str, pre.mean), "--std", *map(str, pre.std), "--crop-pct", str(pre.crop_pct),
             "--interpolation", pre.interpolation, "--model-input-size", *map(str, pre.input_size), "--pad-type", "symmetric"]
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES))
    routes = {"hub": [str(tiny_model)], "config": [str(bare / "weights.safetensors"), "--config", str(bare / "my-config.json")],
              "flags": [str(bare / "weights.safetensors"), *flags, "--labels", str(tmp_path / "labels.txt")]}
    out = {}
    for name, args in routes.items():
        r = CliRunner().invoke(cli, ["compress", *args, *common, "-o", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        out[name] = (json.loads((tmp_path / name / "manifest.json").read_text()), json.loads((tmp_path / name / "report.json").read_text()))
    for name in ("config", "flags"):
        manifest, report = out[name]
        assert manifest["preprocess"] == out["hub"][0]["preprocess"] and manifest["labels"] == out["hub"][0]["labels"]
        assert report["steps"][0]["top1"] == out["hub"][1]["steps"][0]["top1"]
        assert manifest["source"]["settings"] == report["model"]["settings"] and set(BARE_PREPROCESS_KEYS) <= set(manifest["source"]["settings"])
    assert set(out["config"][0]["source"]["settings"].values()) == {"config"}
    assert out["flags"][0]["source"]["settings"]["pad_type"] == "--pad-type"
    md = {name: (tmp_path / name / "report.md").read_text() for name in routes}
    assert "Checkpoint settings" not in md["hub"]  # a hub folder's settings are its own
    assert "mean: config" in md["config"] and "my-config.json" in md["config"]
    assert "pad_type: --pad-type" in md["flags"] and "crop_pct: --crop-pct" in md["flags"] and "timm's defaults" not in md["flags"]
    from edgefg.converters.onnx_to_tflite import source_module
    from edgefg.manifest import load_manifest

    x = torch.randn(2, 3, *pre.input_size)
    for name in ("config", "flags"):  # the TFLite route rebuilds the PyTorch model from what the artifact recorded
        with torch.no_grad():
            torch.testing.assert_close(source_module(load_manifest(tmp_path / name))(x), hub.module(x))


def test_tune_loads_a_bare_checkpoint_with_its_settings(bare, image_folder, tmp_path):
    from edgefg.tune.api import _plan, model_family
    from edgefg.tune.options import TuneOptions

    opts = TuneOptions(model=bare / "weights.safetensors", data=image_folder, val_data=image_folder, targets=["intel-cpu"], out=tmp_path,
                       checkpoint=CheckpointSettings(config=bare / "my-config.json"))
    assert model_family(opts) == "cnn"
    other = dataclasses.replace(opts, checkpoint=CheckpointSettings(config=bare / "my-config.json", crop_pct=1.0))
    assert _plan(opts, [])["key"] != _plan(other, [])["key"]  # --resume with other settings is another sweep
    with pytest.raises(UnsupportedError, match="bare checkpoint"):
        model_family(dataclasses.replace(opts, checkpoint=None, arch=ARCH, num_classes=3))


def test_report_md_says_which_settings_are_timms_defaults():
    from edgefg.compress.report import _checkpoint_lines

    lines = _checkpoint_lines({"path": "w.safetensors", "config": None, "settings": {"mean": "--mean", "std": TIMM_DEFAULT, "crop_pct": TIMM_DEFAULT}})
    assert "mean: --mean" in lines[0] and "std: timm default" in lines[0]
    assert len(lines) == 2 and "std, crop_pct" in lines[1] and "not from the model" in lines[1]
    assert _checkpoint_lines({"path": "hub/", "type": "timm-hub"}) == []
