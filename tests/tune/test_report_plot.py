"""tune's report stays readable: latency spread (IQR) beside p50, Pareto plots that do not stretch one
image to full height, labels that do not overlap, size shown on a latency axis, over-budget trials marked."""
from __future__ import annotations

import pytest

from edgefg.tune.latency_source import Measured, classify
from edgefg.tune.options import Budget
from edgefg.tune.report import label_offsets, markdown, marker_area, plot_pareto, summarize, y_limits

TARGET = "onnxruntime-cpu"
HOST = classify(Measured(TARGET, "onnxruntime", "onnxruntime", None, None, None, "x86_64", "test CPU"))


def _trials() -> list[dict]:
    # four trials one image apart (of 600) and within a fraction of a millisecond: the case that overlapped
    rows = {"fp32": (0.9500, 7.07, 0.40, 14.0, 0.0), "int8": (0.9483, 2.88, 0.10, 3.6, 0.17), "int8 mixed": (0.9483, 2.95, 0.12, 3.8, 0.17),
            "int8 sq0.5": (0.9467, 2.90, 0.11, 3.6, 0.33)}
    return [{"id": tid.replace(" ", "-"), "label": tid, "status": "ok", "error": None,
             "targets": {TARGET: {"error": None, "top1": t, "top1_drop": 100 * (0.95 - t) if d else 0.0, "worst_class_drop": 0.0,
                                  "latency_ms_p50": p50, "latency_ms_iqr": iqr, "size_mb": size, "images": 600,
                                  "node": "local:h", "runtime": "onnxruntime", **HOST.fields()}}}
            for tid, (t, p50, iqr, size, d) in rows.items()]


def test_top1_axis_spans_at_least_a_few_images_and_two_points():
    lo, hi = y_limits([94.83, 95.0], 600)
    assert hi - lo >= 2.0 and lo <= 94.83 and hi >= 95.0  # 0.17 pt (one image) is not the plot's height
    lo, hi = y_limits([90.0, 91.0], 100)
    assert hi - lo >= 5.0  # five images of 100 = 5 pt
    assert y_limits([99.9, 100.0], 1000)[1] <= 100.1  # the axis does not run far past 100 %
    lo, hi = y_limits([60.0, 90.0], 100)
    assert lo <= 60.0 and hi >= 90.0  # a wide spread is kept whole


def test_labels_at_one_spot_are_stacked_apart():
    texts = ["fp32", "int8", "int8 mixed"]
    offs = label_offsets([(100.0, 100.0)] * 3, texts, font_px=10)
    ys = sorted(dy for _, dy in offs)
    assert all(b - a >= 13.0 - 1e-9 for a, b in zip(ys, ys[1:]))  # a line apart (1.3 × font)
    far = label_offsets([(0.0, 0.0), (500.0, 300.0)], ["a", "b"], font_px=10)
    assert far[0] == far[1]  # labels that do not meet keep the default spot
    assert marker_area(14.0, 14.0) > marker_area(3.6, 14.0) > 16.0


def test_report_shows_the_latency_spread_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    trials = _trials()
    budgets = {TARGET: Budget(max_drop=0.2, max_latency_ms=5.0)}
    res = summarize(trials, [TARGET], budgets, "latency")
    assert res["best"][TARGET]["trial"] == "int8"
    result = {"model": "m", "val_images": 600, "val_data": "v", "engine": "in-process", "wall_s": 1.0, "objective": "latency",
              "targets": [TARGET], "trials": trials, "budgets": {TARGET: budgets[TARGET].__dict__}, **res}
    md = markdown(result)
    header = next(line for line in md.splitlines() if line.startswith("| trial"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[cols.index("p50 ms") + 1] == "IQR ms"
    fp32 = next(line for line in md.splitlines() if line.startswith("| fp32"))
    assert [c.strip() for c in fp32.strip("|").split("|")][cols.index("IQR ms")] == "0.40"
    assert "their spread (p75 − p25)" in md
    png = plot_pareto(tmp_path, trials, TARGET, res["pareto"][TARGET], res["best"][TARGET], budgets[TARGET])
    assert png is not None and png.stat().st_size > 1000
