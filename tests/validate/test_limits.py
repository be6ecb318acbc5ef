"""One formatter for gate values, limits and messages (edgefg/validate/limits.py) and its users."""
from xml.etree import ElementTree as ET

from edgefg.validate.limits import check_message, format_limit, format_value
from edgefg.validate.report import validation_markdown, write_junit


def test_minimum_and_maximum_wording():
    assert check_message("top1", 0.9502, 0.99) == "top1 = 0.9502 is below the minimum 0.9900"
    assert check_message("agreement", 0.995, 0.99) == "agreement = 0.9950 meets the minimum 0.9900"
    assert check_message("top1_drop", 1.5, 1.0) == "top1_drop = 1.50 pt is above the maximum 1.00 pt"
    assert check_message("worst_class_drop", 4.3478, 10) == "worst_class_drop = 4.35 pt meets the maximum 10.00 pt"


def test_limits_of_one_unit_print_alike():
    assert format_limit("top1_drop", 1.0) == "≤ 1.00 pt" and format_limit("worst_class_drop", 10.0) == "≤ 10.00 pt"
    assert format_limit("top1", 0.95) == "≥ 0.9500"
    assert format_value("top1_drop", None) == "–"


def _result(passed_top1: bool):
    top1, limit = (0.97, 0.95) if passed_top1 else (0.9502, 0.99)
    checks = [
        {"name": "top1", "value": top1, "limit": limit, "direction": "min", "passed": passed_top1, "message": check_message("top1", top1, limit)},
        {"name": "top1_drop", "value": 0.5, "limit": 1.0, "direction": "max", "passed": True, "message": check_message("top1_drop", 0.5, 1.0)},
        {"name": "worst_class_drop", "value": 4.0, "limit": 10.0, "direction": "max", "passed": True, "message": check_message("worst_class_drop", 4.0, 10.0)},
    ]
    return {"bundle": "b", "data": "d", "images": 10, "top1": top1, "top1_drop": 0.5, "worst_class_drop": 4.0, "checks": checks,
            "passed": passed_top1}


def test_junit_failure_says_below_the_minimum(tmp_path):
    write_junit(tmp_path / "j.xml", _result(False))
    failures = ET.parse(tmp_path / "j.xml").getroot().findall(".//failure")
    assert [f.get("message") for f in failures] == ["top1 = 0.9502 is below the minimum 0.9900"]


def test_markdown_checks_table_uses_the_same_formatter():
    md = validation_markdown(_result(False))
    assert "| top1_drop | 0.50 pt | ≤ 1.00 pt | yes |" in md
    assert "| worst_class_drop | 4.00 pt | ≤ 10.00 pt | yes |" in md
    assert "| top1 | 0.9502 | ≥ 0.9900 | no |" in md
    assert "- **failed**: top1 = 0.9502 is below the minimum 0.9900" in md
    assert "exceeds" not in md and "1.0000" not in md


def _drop(name, pts, lost, gained, images=23):
    from edgefg.validate.metrics import sign_test_p

    return {"class": name, "images": images, "drop_pts": pts, "drop_images": lost - gained, "lost": lost, "gained": gained,
            "p_value": sign_test_p(lost, gained)}


def test_max_class_drop_means_the_same_in_validate_and_compress():
    from edgefg.compress import quantize
    from edgefg.validate import metrics
    from edgefg.validate.api import class_drop_check

    assert quantize.class_failures is metrics.class_failures  # compress's budget and validate's gate: one function
    drops = [_drop("noise", 13.0, 3, 0), _drop("real", 30.4, 7, 0), _drop("gained", -4.3, 0, 1)]
    c = class_drop_check(drops, 10.0, 0.05)
    assert not c["passed"] and c["classes_over"] == ["real"] and c["value"] == 30.4
    assert c["message"].startswith("class_drop = 30.40 pt is above the maximum 10.00 pt") and "real −30.4 pt" in c["message"]
    assert [r["class"] for r in metrics.class_failures(drops, 10.0, 0.05)] == c["classes_over"]
    # 3 of 23 images lost (p = 0.125) is within a 10-point budget at alpha 0.05, over it when every drop counts
    ok = class_drop_check(drops[:1], 10.0, 0.05)
    assert ok["passed"] and ok["value"] == 0.0 and "meets the maximum" in ok["message"]
    strict = class_drop_check(drops[:1], 10.0, 1.0)
    assert not strict["passed"] and strict["value"] == 13.0


def test_worst_classes_lists_only_losers_worst_first():
    from edgefg.validate.metrics import losing_classes

    drops = [_drop("b", 4.3, 1, 0), _drop("up", -4.3, 0, 1), _drop("same", 0.0, 0, 0), _drop("a", 8.7, 2, 0)]
    assert [r["class"] for r in losing_classes(drops)] == ["a", "b"]
