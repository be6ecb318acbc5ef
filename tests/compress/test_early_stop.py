"""Early stopping of a distillation that cannot reach its budget: the rule, and through compress."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgefg.compress.early_stop import EarlyStop


def _predict_with_accuracies(y: np.ndarray, accuracies: list[float]):
    """A fake student whose top-1 on ``y`` follows ``accuracies``, one value per scoring pass (one call)."""
    calls = iter(accuracies)

    def predict(x: np.ndarray) -> np.ndarray:
        right = np.arange(len(y)) < int(round(next(calls) * len(y)))
        logits = np.zeros((len(y), 3), np.float32)
        logits[np.arange(len(y)), np.where(right, y, (y + 1) % 3)] = 1.0
        return logits

    return predict


X = np.zeros((200, 3, 4, 4), np.float32)
Y = np.arange(200) % 3


def test_stops_when_the_last_gain_cannot_reach_the_budget():
    watch = EarlyStop(max_drop=1.0, reference_top1=0.90, x=X, y=Y, batch_size=200)
    predict = _predict_with_accuracies(Y, [0.60, 0.80, 0.805])
    assert watch(0, 10, predict) is False  # before training: 30 pt
    assert watch(1, 10, predict) is False  # 10 pt, gained 20 pt: 9 more such epochs would get there
    assert watch(2, 10, predict) is True  # 9.5 pt, gained 0.5 pt: even 8 × 0.5 pt leaves 5.5 pt > 1 pt
    assert watch.stopped["epoch"] == 2 and watch.stopped["best_case_drop"] == pytest.approx(5.5) and "8 remaining" in watch.stopped["reason"]
    assert [h["top1_drop"] for h in watch.history] == pytest.approx([30.0, 10.0, 9.5])
    assert watch.stopped["saved_s_estimate"] >= 0 and watch.stopped["seconds_per_epoch"] >= 0
    edge = EarlyStop(max_drop=1.0, reference_top1=0.90, x=X, y=Y, batch_size=200)
    predict = _predict_with_accuracies(Y, [0.60, 0.80, 0.81])
    assert not any(edge(e, 10, predict) for e in range(3))  # 9 pt − 8 × 1 pt = 1 pt: exactly reachable, kept


def test_keeps_a_trial_that_can_still_make_it_and_never_stops_at_the_end():
    fast = EarlyStop(max_drop=1.0, reference_top1=0.90, x=X, y=Y, batch_size=200)
    predict = _predict_with_accuracies(Y, [0.50, 0.70, 0.80])
    assert not fast(0, 3, predict) and not fast(1, 3, predict) and not fast(2, 3, predict)  # 10 pt, gaining 10 pt an epoch, 1 left
    assert fast.stopped is None
    last = EarlyStop(max_drop=1.0, reference_top1=0.90, x=X, y=Y, batch_size=200)
    predict = _predict_with_accuracies(Y, [0.10, 0.10])
    assert not last(0, 1, predict) and not last(1, 1, predict)  # nothing left to save after the last epoch


def test_compress_stops_a_hopeless_distillation_and_says_so(tmp_path, tiny_model, image_folder):
    """A budget no model can reach (a drop of −100 pt): stopped after the first epoch of four, the
    model so far written, the report says why and what it saved, exit 1; a reachable one trains on."""
    from click.testing import CliRunner

    from edgefg.compress.api import CompressOptions, compress
    from edgefg.errors import CheckFailed
    from edgefg.models.loader import load_model

    base = dict(recipe="fp32", data=image_folder, val_data=image_folder, prune=0.3, epochs=4, latency_iters=2, plot=False, force=True,
                check_preprocess=False)
    with pytest.raises(CheckFailed, match="stopped early: after epoch 1 of 4"):
        compress(load_model(tiny_model), tmp_path / "hopeless", CompressOptions(**base, early_stop_drop=-100.0))
    report = json.loads((tmp_path / "hopeless" / "report.json").read_text())
    assert report["passed"] is False and report["stopped_early"]["epoch"] == 1 and report["stopped_early"]["step"] == "distil"
    kd = next(d for d in report["compression"] if d["step"] == "distil")
    assert len(kd["history"]) == 1 and kd["history"][-1]["stopped_early"] and len(kd["early_stop"]["history"]) == 2
    assert (tmp_path / "hopeless" / "model.onnx").is_file()

    ok = compress(load_model(tiny_model), tmp_path / "ok", CompressOptions(**base, early_stop_drop=100.0))
    kd = next(d for d in ok.report["compression"] if d["step"] == "distil")
    assert ok.passed and len(kd["history"]) == 4 and kd["early_stop"]["stopped"] is None and "stopped_early" not in ok.report

    r = CliRunner().invoke(__import__("edgefg.cli", fromlist=["cli"]).cli,
                           ["compress", str(tiny_model), "--data", str(image_folder), "--early-stop-drop", "1", "-o", str(tmp_path / "none")])
    assert r.exit_code == 2 and "--early-stop-drop needs a training step" in r.output
