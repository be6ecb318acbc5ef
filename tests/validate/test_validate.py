import json
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.errors import DataError, UnsupportedError
from edgefg.validate.api import Thresholds, validate

REQUIRED = {"top1", "top5", "reference_top1", "top1_drop", "worst_class_drop", "agreement", "passed"}


def test_validate_against_reference(tiny_bundles, tiny_artifacts, image_folder):
    res = validate(tiny_bundles["int8-onnxruntime-cpu"], image_folder, reference=tiny_artifacts["fp32"], thresholds=Thresholds(max_top1_drop=100))
    assert REQUIRED <= set(res) and res["images"] == 18 and res["passed"]
    assert 0 <= res["top1"] <= res["top5"] <= 1 and 0 <= res["agreement"] <= 1
    assert res["top1_drop"] == pytest.approx(100 * (res["reference_top1"] - res["top1"]))
    same = validate(tiny_bundles["fp32-intel-cpu"], image_folder, reference=tiny_artifacts["fp32"])
    assert same["agreement"] == 1.0 and same["top1_drop"] == 0 and same["mean_kl"] < 1e-8


def test_unlabelled_data(tiny_bundles, tiny_artifacts, image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in list((image_folder / "Least_Flycatcher").iterdir())[:4]:
        (flat / p.name).write_bytes(p.read_bytes())
    res = validate(tiny_bundles["int8-intel-cpu"], flat, reference=tiny_artifacts["fp32"])
    assert res["top1"] is None and res["agreement"] is not None and res["images"] == 4
    with pytest.raises(DataError, match="--reference"):
        validate(tiny_bundles["int8-intel-cpu"], flat)
    with pytest.raises(UnsupportedError, match="--reference"):
        validate(tiny_bundles["int8-intel-cpu"], image_folder, thresholds=Thresholds(max_top1_drop=1))


def test_cli_exit_codes_and_reports(tiny_bundles, tiny_artifacts, image_folder, tmp_path):
    runner = CliRunner()
    bundle, ref = str(tiny_bundles["int8-intel-cpu"]), str(tiny_artifacts["fp32"])
    args = ["validate", bundle, "--data", str(image_folder), "--reference", ref]
    ok = runner.invoke(cli, args + ["--max-top1-drop", "100", "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"), "--markdown", str(tmp_path / "r.md")])
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert REQUIRED <= set(data) and data["passed"] is True
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    assert "PASSED" in (tmp_path / "r.md").read_text()
    # an impossible threshold fails the gate with exit code 1 and a JUnit failure
    bad = runner.invoke(cli, args + ["--min-top1", "1.0", "--junit", str(tmp_path / "f.xml")])  # (> 1 is now a usage error)
    assert bad.exit_code == 1
    assert ET.parse(tmp_path / "f.xml").getroot().find("testsuite/testcase/failure") is not None
    usage = runner.invoke(cli, ["validate", bundle])
    assert usage.exit_code == 2
    missing = runner.invoke(cli, ["validate", bundle, "--data", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_bare_checkpoint_reference_says_how_to_make_it_one_validate_takes(tiny_bundles, image_folder, tmp_path):
    ckpt = tmp_path / "weights.pth"
    ckpt.write_bytes(b"not read: refused by its kind before loading")
    r = CliRunner().invoke(cli, ["validate", str(tiny_bundles["int8-intel-cpu"]), "--data", str(image_folder), "--reference", str(ckpt)])
    assert r.exit_code == 2 and "bare checkpoint" in r.output and "Traceback" not in r.output
    hint = r.output.split("hint: ", 1)[1]
    assert hint.startswith("make it an artifact first (edgefg compress") and "--arch ARCH" in hint
    from tests.test_hints import command_options, flag_problems

    assert flag_problems(r.output, command_options()) == []  # every flag it names is one of the command it names


def test_load_model_takes_the_label_names_themselves(tmp_path, caplog):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from edgefg.models.loader import CheckpointSettings, load_model

    model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=3)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    with caplog.at_level("WARNING"):
        loaded = load_model(tmp_path / "w.safetensors", arch="mobilenetv2_050", num_classes=3, labels=["a", "b", "c"], checkpoint=CheckpointSettings(timm_defaults=True))
    assert loaded.labels == ["a", "b", "c"] and "no labels given" not in caplog.text  # the TFLite route reloads the source this way
