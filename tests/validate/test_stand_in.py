"""`validate --stand-in` / `compare --stand-in`: a device-only bundle (TensorRT) gated here in its host
stand-in, with every report saying so; without the option the missing engine's error names it."""
from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.validate.compare import Tolerances, compare, compare_markdown


@pytest.fixture(scope="module")
def trt_bundle(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    return deploy(tiny_artifacts["int8"], "jetson-orin-nano", tmp_path_factory.mktemp("trt") / "bundle").directory


def _tensorrt_here() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def test_validate_stand_in_gates_and_says_so(trt_bundle, tiny_artifacts, image_folder, tmp_path):
    runner = CliRunner()
    base = ["validate", str(trt_bundle), "--data", str(image_folder), "--reference", str(tiny_artifacts["fp32"]), "--stand-in"]
    files = ["--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), "--junit", str(tmp_path / "r.xml")]
    ok = runner.invoke(cli, base + ["--max-top1-drop", "100"] + files)
    assert ok.exit_code == 0, ok.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["passed"] and res["backend"] == "onnxruntime (stand-in for tensorrt)"
    assert res["stand_in"]["engine"] == "onnxruntime" and res["stand_in"]["for_backend"] == "tensorrt" and res["stand_in"]["model_file"] == "model.onnx"
    assert res["agreement"] is not None and res["top1_drop"] is not None  # scored against the reference like any bundle
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# edgefg validate — PASSED on a stand-in (onnxruntime for tensorrt)")
    assert "**Stand-in**: scored with onnxruntime on this host, a stand-in for tensorrt" in md and "check there too" in md
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").iter("property")}
    assert "stand-in for tensorrt" in props["stand_in"]
    # the gate is real: a limit the stand-in misses fails the run (exit 1), still marked as a stand-in
    bad = runner.invoke(cli, base + ["--min-top1", "0.999", "--json", str(tmp_path / "f.json")])
    assert bad.exit_code == 1, bad.output
    failed = json.loads((tmp_path / "f.json").read_text())
    assert not failed["passed"] and failed["stand_in"]["engine"] == "onnxruntime" and "FAILED on a stand-in" in bad.output


@pytest.mark.skipif(_tensorrt_here(), reason="TensorRT is installed here: the bundle runs without a stand-in")
def test_validate_without_stand_in_names_the_option(trt_bundle, image_folder):
    r = CliRunner().invoke(cli, ["validate", str(trt_bundle), "--data", str(image_folder)])
    assert r.exit_code == 2, r.output
    assert "--stand-in" in r.output and "Traceback" not in r.output


def test_stand_in_flag_on_a_bundle_that_runs_here_changes_nothing(tiny_bundles, image_folder, tmp_path):
    r = CliRunner().invoke(cli, ["validate", str(tiny_bundles["int8-onnxruntime-cpu"]), "--data", str(image_folder), "--stand-in",
                                 "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["stand_in"] is None and res["backend"] == "onnxruntime" and "stand-in" not in r.output


def test_compare_stand_in_rows_and_markdown_say_so(trt_bundle, tiny_bundles, image_folder):
    res = compare([tiny_bundles["int8-onnxruntime-cpu"], trt_bundle], image_folder, Tolerances(min_cosine=0.99), stand_in=True)
    ref, trt = res["bundles"]
    assert ref["stand_in"] is None and trt["stand_in"]["engine"] == "onnxruntime" and trt["stand_in"]["for_backend"] == "tensorrt"
    text = compare_markdown(res)
    assert "onnxruntime (stand-in for tensorrt)" in text and f"**Stand-in** — {trt_bundle.name}: scored with onnxruntime" in text
