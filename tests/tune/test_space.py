from __future__ import annotations

import pytest

from edgefg.errors import DataError, InputPathError
from edgefg.tune.options import Budget
from edgefg.tune.pareto import best_within, budget_excess, budget_violations, pareto_front
from edgefg.tune.space import SearchSpace, TrialConfig, builtin_space, load_space


def test_float_precisions_share_one_artifact_int8_does_not():
    fp32, fp16, int8 = (TrialConfig(precision=p) for p in ("fp32", "fp16", "int8"))
    assert fp32.compress_key == fp16.compress_key != int8.compress_key
    assert len({fp32.trial_id, fp16.trial_id, int8.trial_id}) == 3
    assert TrialConfig(resolution=160).compress_key != fp32.compress_key


def test_space_enumerates_distinct_points_baseline_first():
    space = SearchSpace(precision=["fp32", "int8"], prune=[0.0, 0.2], kd_epochs=[1, 2], token_method=["evit", "tome"])
    configs = space.configs()
    # kd_epochs only matters when pruning, token_method only with token reduction
    assert len(configs) == 2 * (1 + 2)
    assert configs[0] == TrialConfig(precision="fp32")
    assert space.sample(3, seed=0)[0] == configs[0] and len(space.sample(3, seed=0)) == 3
    assert space.sample(3, seed=0) == space.sample(3, seed=0)
    assert len(builtin_space("cnn").configs()) == 18 and builtin_space("vit").configs()[0].token_keep is None


def test_space_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[space]\nprecision = ["fp32", "int8-accuracy"]\nresolution = ["none", 160]\nprune = 0.2\n')
    space = load_space(f)
    assert space.resolution == [None, 160] and space.prune == [0.2] and len(space.configs()) == 4
    f.write_text('[space]\nresolutions = [160]\n')
    with pytest.raises(DataError, match="unknown knobs: resolutions"):
        load_space(f)
    f.write_text('[space]\nprecision = ["int4"]\n')
    with pytest.raises(DataError, match="unknown precision"):
        load_space(f)
    with pytest.raises(InputPathError):
        load_space(tmp_path / "missing.toml")


def _r(top1, lat, size=1.0, drop=0.0, cls=0.0, **extra):
    return {"top1": top1, "latency_ms_p50": lat, "size_mb": size, "top1_drop": drop, "worst_class_drop": cls, **extra}


def _losses(lost_per_class: dict[int, int], classes: int = 20, images: int = 20) -> dict:
    """A trial's per-class record from real predictions: the reference right on every image, the
    candidate wrong on ``lost`` images of the given classes (validate's own metrics code)."""
    import numpy as np

    from edgefg.validate.metrics import class_drops, classes_tested, classification

    names = [f"c{i}" for i in range(classes)]
    labels = np.repeat(np.arange(classes), images)
    ref, cand = np.eye(classes)[labels], np.eye(classes)[labels]
    for c, lost in lost_per_class.items():
        rows = np.flatnonzero(labels == c)[:lost]
        cand[rows] = np.eye(classes)[(c + 1) % classes]
    drops = class_drops(classification(cand, labels, names), classification(ref, labels, names))
    return {"class_losses": [d for d in drops if d["drop_pts"] > 0], "classes_tested": classes_tested(drops),
            "images_per_class": {"min": images, "median": images}, "classes": classes}


def test_pareto_front_and_budget_limits():
    pts = [("a", _r(0.90, 10)), ("b", _r(0.88, 5, drop=2)), ("c", _r(0.85, 6, drop=5)), ("d", _r(0.80, 2, drop=10, cls=30))]
    assert pareto_front(pts) == ["d", "b", "a"]  # c is dominated by b
    assert best_within(pts, Budget(max_latency_ms=6), 4)["trial"] == "d"  # fastest within 6 ms
    assert best_within(pts, Budget(max_latency_ms=6, max_drop=1), 4)["trial"] is None
    none = best_within(pts, Budget(max_latency_ms=1), 4)
    assert none["trial"] is None and "p50" in none["reason"]
    # a result without per-class records (an older sweep) is judged by its worst drop in points
    assert best_within(pts, Budget(max_class_drop=20, max_latency_ms=3), 4)["trial"] is None


def test_objective_fastest_smallest_most_accurate_and_ties():
    pts = [("fp32", _r(0.900, 10.0, 9.0)), ("int8", _r(0.897, 5.0, 2.7, drop=0.3)), ("int8-small", _r(0.896, 5.0, 2.5, drop=0.4)),
           ("pruned", _r(0.850, 3.0, 2.0, drop=5.0)), ("fp32-192", _r(0.900, 7.0, 9.0))]
    budget = Budget(max_drop=1.0)
    fast = best_within(pts, budget, 5, "latency")
    assert fast["trial"] == "int8-small" and fast["objective"] == "latency"  # 5 ms tie: the smaller one
    assert fast["runner_up"]["trial"] == "int8" and fast["within_budget"] == 4  # pruned is over the 1 pt budget
    assert best_within(pts, budget, 5, "size")["trial"] == "int8-small"
    acc = best_within(pts, budget, 5, "accuracy")
    assert acc["trial"] == "fp32-192" and acc["runner_up"]["trial"] == "fp32"  # equal top-1: the faster one
    assert best_within(pts, Budget(), 5, "latency")["trial"] == "pruned"  # no budget: simply the fastest
    assert best_within(pts, Budget(max_drop=1.0, max_size_mb=2.6), 5, "accuracy")["trial"] == "int8-small"
    with pytest.raises(ValueError, match="objective"):
        best_within(pts, budget, 5, "cost")


def test_class_gate_needs_evidence_unless_points_are_asked_for():
    # class c0: 2 of 20 images lost = 10 pt, p = 0.25: over a 5-pt budget but noise; c1: 12 of 20 = 60 pt, significant
    noise = _r(0.899, 2.0, drop=0.1, cls=10.0, **_losses({0: 2}))
    real = _r(0.889, 1.0, drop=1.1, cls=60.0, **_losses({0: 2, 1: 12}))
    fp32 = _r(0.90, 4.0)
    pts = [("fp32", fp32), ("noise", noise), ("real", real)]
    evidence = Budget(max_class_drop=5.0)
    assert budget_violations(noise, evidence) == []  # over the threshold, not significant: passes
    why = budget_violations(real, evidence)
    assert len(why) == 1 and why[0].startswith("1 class(es) significantly worse than −5 pt: c1 −60.0 pt (12 of 20 img, p = ")
    assert best_within(pts, evidence, 3)["trial"] == "noise"
    points = Budget(max_class_drop=5.0, class_gate="points")
    assert budget_violations(noise, points) == ["1 class(es) worse than −5 pt: c0 −10.0 pt (2 of 20 img)"]
    assert best_within(pts, points, 3)["trial"] == "fp32"
    # the closest-trial hint names a trial that breaks the fewest limits (real breaks two), the best by the objective
    miss = best_within(pts, Budget(max_class_drop=5.0, max_latency_ms=0.5), 3)
    assert miss["trial"] is None and miss["reason"].endswith("closest noise: p50 2.00 ms > 0.5 ms")


def test_closest_trial_is_the_one_that_misses_by_least():
    # every trial breaks one limit; the old rule (fewest limits, then the fastest) named the INT8 trial
    # 4.5 pt over a 0.5 pt drop budget, when the FP32 one misses a 10 ms latency budget by 0.2 ms
    pts = [("int8", _r(0.85, 3.0, drop=5.0)), ("fp32", _r(0.90, 10.2)), ("pruned", _r(0.80, 2.0, drop=10.0))]
    budget = Budget(max_latency_ms=10.0, max_drop=0.5)
    assert budget_excess(pts[1][1], budget) == pytest.approx(0.02) and budget_excess(pts[0][1], budget) == pytest.approx(4.5)
    miss = best_within(pts, budget, 3, "latency")
    assert miss["trial"] is None and miss["closest"] == "fp32" and miss["reason"].endswith("closest fp32: p50 10.20 ms > 10 ms")
    # two small misses beat one large one; within budget the excess is 0
    two = _r(0.89, 10.5, size=2.1, drop=0.0)
    assert budget_excess(two, Budget(max_latency_ms=10.0, max_size_mb=2.0)) == pytest.approx(0.1)
    assert budget_excess(_r(0.9, 1.0), budget) == 0.0
    # an agreement miss is measured against the room above the limit
    a = _r(0.9, 1.0, frame_agreement={"agreement": 0.98, "images": 500, "agree": 490, "ci95": [0.96, 0.99]})
    assert budget_excess(a, Budget(min_agreement=0.99)) == pytest.approx(1.0)


def test_agreement_budget():
    a = _r(0.9, 1.0, frame_agreement={"agreement": 0.98, "images": 500, "agree": 490, "ci95": [0.964, 0.989]})
    assert budget_violations(a, Budget(min_agreement=0.97)) == []
    assert budget_violations(a, Budget(min_agreement=0.99)) == ["agreement 0.9800 < 0.99 on 500 frames"]
    assert "no agreement frames scored" in budget_violations(_r(0.9, 1.0), Budget(min_agreement=0.99))[0]


def test_input_size_distillation_is_a_knob():
    space = SearchSpace(precision=["fp32"], resolution=[None, 160], resolution_kd=[False, True], kd_epochs=[2])
    configs = space.configs()
    # distilling at the native size is no knob: native, 160 plain, 160 distilled
    assert [c.label() for c in configs] == ["fp32", "fp32 160px", "fp32 160px+kd2"]
    plain, kd = configs[1], configs[2]
    assert plain.compress_key != kd.compress_key and kd.compress_dict()["kd_epochs"] == 2 and plain.compress_dict()["kd_epochs"] == 0
    # the knob's default leaves ids as they were, so sweeps from before it still resume
    assert TrialConfig(precision="int8", resolution=160).trial_id == TrialConfig(precision="int8", resolution=160, resolution_kd=False).trial_id

    from edgefg.tune.options import TuneOptions
    from edgefg.tune.work import _compress_options

    opts = TuneOptions(model="m", data="d", val_data="v", targets=["intel-cpu"], out="o", early_stop_drop=1.0)
    c = _compress_options(opts, kd)
    assert c.input_size == 160 and c.epochs == 2 and c.early_stop_drop == 1.0
    c = _compress_options(opts, plain)
    assert c.input_size is None and c.epochs is None and c.early_stop_drop is None
