from __future__ import annotations

import pytest

from edgefg.errors import DataError, InputPathError
from edgefg.tune.options import Budget
from edgefg.tune.pareto import best_within, pareto_front
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


def _r(top1, lat, size=1.0, drop=0.0, cls=0.0):
    return {"top1": top1, "latency_ms_p50": lat, "size_mb": size, "top1_drop": drop, "worst_class_drop": cls}


def test_pareto_and_best_under_budget():
    pts = [("a", _r(0.90, 10)), ("b", _r(0.88, 5, drop=2)), ("c", _r(0.85, 6, drop=5)), ("d", _r(0.80, 2, drop=10, cls=30))]
    assert pareto_front(pts) == ["d", "b", "a"]  # c is dominated by b
    assert best_within(pts, Budget(max_latency_ms=6), 4)["trial"] == "b"
    assert best_within(pts, Budget(max_latency_ms=6, max_drop=1), 4)["trial"] is None
    none = best_within(pts, Budget(max_latency_ms=1), 4)
    assert none["trial"] is None and "p50" in none["reason"]
    assert best_within(pts, Budget(max_class_drop=20, max_latency_ms=3), 4)["trial"] is None
