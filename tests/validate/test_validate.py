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
