"""edgefg compare: reference-relative parity, tolerances, accuracy side by side, exit codes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.errors import ClassMismatchError, MissingDependencyError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.validate.compare import Tolerances, compare, compare_markdown, tolerance_check
from edgefg.validate.metrics import parity


def test_tolerance_check_is_isclose():
    ref = np.array([[1.0, -2.0, 0.0]])
    cand = ref + np.array([[0.05, 0.05, 0.05]])
    assert tolerance_check(cand, ref, Tolerances(atol=0.1))["mismatched"] == 0
    assert tolerance_check(cand, ref, Tolerances(atol=0.01))["mismatched"] == 3
    assert tolerance_check(cand, ref, Tolerances(atol=0.01, rtol=0.03))["mismatched"] == 2  # 0.01 + 0.03·2 covers only -2
    assert tolerance_check(cand, ref, Tolerances(rtol=0.06))["mismatched"] == 1  # only the 0.0 element fails


def test_compare_bundles_side_by_side(tiny_bundles, image_folder):
    ref, fp32_ov, int8 = tiny_bundles["fp32-onnxruntime-cpu"], tiny_bundles["fp32-intel-cpu"], tiny_bundles["int8-onnxruntime-cpu"]
    res = compare([ref, fp32_ov, int8], image_folder)
    assert res["passed"] and res["labelled"] and res["images"] == 18 and len(res["bundles"]) == 3
    r0, r1, r2 = res["bundles"]
    assert r0["parity"] is None and r0["accuracy"]["images"] == 18
    assert r1["parity"]["cosine_min"] > 0.9999 and r1["parity"]["top1_agreement"] == 1.0
    assert {"top1", "top5", "worst_class_accuracy"} <= set(r2["accuracy"]) and "worst_class_drop" in r2
    # the numbers are metrics.parity's, on the same images
    from edgefg.calibration.dataset import scan
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.validate.evaluate import score_samples

    with LoadedBundle(ref) as a, LoadedBundle(int8) as b:
        samples = scan(image_folder, a.labels).samples
        expect = parity(score_samples(b, samples).scores, score_samples(a, samples).scores)
    assert r2["parity"]["max_abs"] == pytest.approx(expect["max_abs"]) and r2["parity"]["cosine_min"] == pytest.approx(expect["cosine_min"])
    text = compare_markdown(res)
    assert "| reference |" in text and "int8-onnxruntime-cpu" in text


def test_tolerance_failure_exit_codes_and_json(tiny_bundles, image_folder, tmp_path):
    from edgefg.cli import cli

    ref, int8 = str(tiny_bundles["fp32-onnxruntime-cpu"]), str(tiny_bundles["int8-onnxruntime-cpu"])
    out = tmp_path / "c.json"
    r = CliRunner().invoke(cli, ["compare", ref, int8, "--data", str(image_folder), "--atol", "1e-7", "--min-cosine", "0.5", "--json", str(out)])
    assert r.exit_code == 1, r.output
    data = json.loads(out.read_text())
    assert not data["passed"] and [c["passed"] for c in data["bundles"][1]["checks"]] == [False, True]
    assert "Failed:" in r.output
    r = CliRunner().invoke(cli, ["compare", ref, int8, "--data", str(image_folder), "--min-cosine", "0.5", "--min-agreement", "0.0"])
    assert r.exit_code == 0, r.output


def test_compare_refuses_mismatched_labels_and_single_bundle(tiny_bundles, image_folder, tmp_path):
    other = shutil.copytree(tiny_bundles["fp32-intel-cpu"], tmp_path / "other")
    m = load_manifest(other)
    m.labels = list(reversed(m.labels))
    m.save(other)
    m.record_files(other)
    m.save(other)
    with pytest.raises(ClassMismatchError, match="different labels"):
        compare([tiny_bundles["fp32-onnxruntime-cpu"], other], image_folder)
    with pytest.raises(UnsupportedError, match="at least two"):
        compare([other], image_folder)


def test_tensorrt_bundle_stand_in(tiny_artifacts, tiny_bundles, image_folder, tmp_path):
    from edgefg.deploy import deploy

    trt = deploy(tiny_artifacts["int8"], "jetson", tmp_path / "trt").directory
    res = compare([tiny_bundles["int8-onnxruntime-cpu"], trt], image_folder, Tolerances(min_cosine=0.99), stand_in=True)
    assert res["bundles"][1]["runtime"] == "onnxruntime (stand-in for tensorrt)" and res["passed"]
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(MissingDependencyError) as err:
            compare([tiny_bundles["int8-onnxruntime-cpu"], trt], image_folder)
        assert "--stand-in" in err.value.hint
