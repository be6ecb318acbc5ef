"""The same gate as a pytest test, for projects that gate CI on pytest.

    EDGEFG_BUNDLE=models/bundle-int8 EDGEFG_GATE_DATA=data/test EDGEFG_REFERENCE=models/art-fp32 \
        pytest examples/ci_accuracy_gate/test_accuracy_gate.py --junitxml=accuracy.xml

Thresholds: EDGEFG_MAX_TOP1_DROP (points, default 1.0), EDGEFG_MAX_CLASS_DROP (points, default 15; a class
fails when it lost more than that and its paired sign test, Holm-corrected over the classes, gives
p < EDGEFG_CLASS_ALPHA, default 0.05 — the rule of `edgefg validate/compress/tune --max-class-drop`;
EDGEFG_CLASS_GATE=points fails every drop over the limit instead).
"""
import json
import os
from pathlib import Path

import pytest

from edgefg.validate.api import Thresholds, validate


@pytest.fixture(scope="module")
def gate_result():
    missing = [v for v in ("EDGEFG_BUNDLE", "EDGEFG_GATE_DATA", "EDGEFG_REFERENCE") if not os.environ.get(v)]
    if missing:
        pytest.skip(f"set {', '.join(missing)} to run the accuracy gate")
    thresholds = Thresholds(
        max_top1_drop=float(os.environ.get("EDGEFG_MAX_TOP1_DROP", "1.0")),
        max_class_drop=float(os.environ.get("EDGEFG_MAX_CLASS_DROP", "15")),
        class_alpha=float(os.environ.get("EDGEFG_CLASS_ALPHA", "0.05")),
        class_gate=os.environ.get("EDGEFG_CLASS_GATE", "evidence"),
    )
    result = validate(os.environ["EDGEFG_BUNDLE"], os.environ["EDGEFG_GATE_DATA"], reference=os.environ["EDGEFG_REFERENCE"], thresholds=thresholds)
    report = os.environ.get("EDGEFG_GATE_JSON")
    if report:
        Path(report).write_text(json.dumps(result, indent=2, default=str))
    return result


@pytest.mark.parametrize("check", ["top1_drop", "class_drop"])
def test_accuracy_gate(gate_result, check):
    found = [c for c in gate_result["checks"] if c["name"] == check]
    assert found, f"{check} was not evaluated (labelled data and a reference are needed)"
    c = found[0]
    assert c["passed"], f"{c['message']}; worst classes: " + ", ".join(
        f"{r['class']} −{r['drop_pts']:.1f} pt ({r['drop_images']} img)" for r in gate_result.get("class_drops", [])[:3] if r["drop_pts"] > 0
    )
