"""The per-class gate by evidence: Holm-corrected paired sign tests, what the data can detect, and
raw points only when asked for (validate, compress and tune share these functions)."""
from __future__ import annotations

import numpy as np
import pytest

from edgefg.validate.api import class_drop_check
from edgefg.validate.metrics import class_drops, class_failures, class_gate_summary, classes_tested, classification, holm_adjust, min_detectable_drop, sign_test_p, significant_drop_count, wilson_interval


def _drops(lost: dict[int, int], gained: dict[int, int] | None = None, classes: int = 10, images: int = 20) -> list[dict]:
    """class_drops of a candidate that loses/gains images of some classes against a reference."""
    names = [f"c{i}" for i in range(classes)]
    labels = np.repeat(np.arange(classes), images)
    ref = np.eye(classes)[labels].copy()
    for c, n in (gained or {}).items():  # the reference is wrong on n images that the candidate gets right
        ref[np.flatnonzero(labels == c)[-n:]] = np.eye(classes)[(c + 1) % classes]
    cand = np.eye(classes)[labels].copy()
    for c, n in lost.items():
        cand[np.flatnonzero(labels == c)[:n]] = np.eye(classes)[(c + 1) % classes]
    return class_drops(classification(cand, labels, names), classification(ref, labels, names))


def test_holm_adjusted_p_values():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm_adjust([]) == []


def test_class_drops_carry_discordant_pairs_and_corrected_p():
    drops = _drops({0: 12, 1: 2}, gained={2: 1})
    by = {r["class"]: r for r in drops}
    assert classes_tested(drops) == 3  # c0, c1 lost images, c2 gained one; the other 7 cannot be tested
    assert by["c0"]["lost"] == 12 and by["c0"]["gained"] == 0 and by["c0"]["p_value"] == sign_test_p(12, 0)
    assert by["c0"]["p_adjusted"] == pytest.approx(3 * sign_test_p(12, 0))  # Holm's first step: × 3 tested classes
    assert by["c1"]["p_adjusted"] == pytest.approx(min(1.0, 2 * sign_test_p(2, 0)))
    assert by["c5"]["p_adjusted"] == 1.0 and by["c5"]["lost"] == by["c5"]["gained"] == 0
    assert significant_drop_count(drops, 0.05) == 1


def test_over_threshold_but_not_significant_passes_unless_points():
    drops = _drops({0: 12, 1: 2})  # c1: 2 of 20 = 10 pt (p 0.25): noise; c0: 60 pt, significant
    assert [r["class"] for r in class_failures(drops, 5.0, 0.05)] == ["c0"]
    assert [r["class"] for r in class_failures(drops, 5.0, 0.05, "points")] == ["c0", "c1"]
    assert class_failures(_drops({1: 2}), 5.0, 0.05) == []
    ok = class_drop_check(_drops({1: 2}), 5.0, 0.05)
    assert ok["passed"] and "20 images a class can only show drops ≥ 25 pt" in ok["message"]
    strict = class_drop_check(_drops({1: 2}), 5.0, 0.05, "points")
    assert not strict["passed"] and strict["classes_over"] == ["c1"] and "raw points" in strict["message"]
    with pytest.raises(ValueError, match="class gate"):
        class_failures(drops, 5.0, 0.05, "votes")


def test_correction_over_many_classes_hides_what_one_test_would_show():
    # 5 of 20 lost in one class: p = 1/32 < 0.05 alone; with 30 other classes flipping one image each, Holm says noise
    alone = _drops({0: 5}, classes=40)
    crowd = _drops({0: 5, **{c: 1 for c in range(1, 31)}}, classes=40)
    assert class_failures(alone, 10.0, 0.05) and not class_failures(crowd, 10.0, 0.05)
    assert class_failures(crowd, 10.0, 0.05, "points")


def test_smallest_detectable_drop():
    assert min_detectable_drop(20, 1, 0.05) == 25.0  # 5 of 20 lost: 1/32 < 0.05
    assert min_detectable_drop(20, 100, 0.05) == 55.0  # 11 of 20: 2^-11 < 0.05 / 100
    assert min_detectable_drop(6, 100, 0.05) is None  # 6 images cannot show a drop among 100 classes
    s = class_gate_summary(_drops({0: 12, 1: 2}), 0.05)
    assert s["classes_tested"] == 2 and s["images_per_class"] == {"min": 20, "median": 20, "max": 20}
    assert s["min_detectable_drop_pts"]["median_class"] == 30.0  # 6 of 20: 2^-6 < 0.025
    assert s["sentence"].startswith("20 images a class can only show drops ≥ 30 pt")


def test_wilson_interval():
    low, high = wilson_interval(990, 1000)
    assert low < 0.99 < high and high < 1.0 and round(low, 3) == 0.982
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(50, 50)[0] < 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
