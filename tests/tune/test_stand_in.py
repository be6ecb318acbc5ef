"""Stand-in latency cannot pass for the device's: where each latency comes from, what `--objective latency`
does on a stand-in, latency budgets, and the marks in tune.json/tune.md/verdicts/plots."""
from __future__ import annotations

import json

import pytest

from edgefg.targets import list_targets
from edgefg.tune.latency_source import Measured, classify, source_of_row
from edgefg.tune.options import Budget
from edgefg.tune.pareto import best_within, budget_violations
from edgefg.tune.report import markdown, plot_pareto, plot_title, summarize

JETSON = Measured("jetson-orin-nano", "tensorrt", "onnxruntime", None, None, "aarch64", "x86_64", "AMD EPYC")


def test_every_profile_has_an_accuracy_budget(tmp_path):
    """Device-only targets too: a drop is never accepted unbounded by tune's defaults."""
    from edgefg.tune.api import target_budgets
    from edgefg.tune.options import TuneOptions

    names = [t.name for t in list_targets()]
    for t in list_targets():
        assert t.budget.get("max_top1_drop") is not None and t.budget["max_top1_drop"] > 0, t.name
        assert t.budget.get("max_class_drop") is not None and t.budget["max_class_drop"] > 0, t.name
    budgets = target_budgets(TuneOptions(model=tmp_path, data=tmp_path, val_data=tmp_path, targets=names, out=tmp_path))
    assert all(b.max_drop is not None and b.max_class_drop is not None for b in budgets.values())


def test_latency_source_rules():
    jet = classify(JETSON)
    assert jet.kind == "stand-in" and jet.stand_in and not jet.ranks_speed
    assert jet.text.startswith("stand-in: onnxruntime on this host (AMD EPYC, x86_64) for tensorrt on jetson-orin-nano")
    assert "onnxruntime, not tensorrt" in jet.text and "not the device's aarch64" in jet.text
    # the Pi's own engine on an x86 CPU: a stand-in whose speed order transfers, its milliseconds do not
    pi = classify(Measured("rpi5", "tflite", "tflite", None, None, "aarch64", "x86_64", "AMD EPYC"))
    assert pi.kind == "stand-in" and pi.ranks_speed and "the host's x86_64 CPU, not the device's aarch64" in pi.text
    # the same engine and arch: this host is a device of the target's kind
    assert classify(Measured("rpi5", "tflite", "tflite", None, None, "aarch64", "arm64", "Cortex-A76")).kind == "host"
    cpu = classify(Measured("intel-cpu", "openvino", "openvino", "CPU", "CPU", "x86_64", "x86_64", "AMD EPYC"))
    assert cpu.kind == "host" and not cpu.stand_in and cpu.text == "this host: openvino on this host (AMD EPYC, x86_64)"
    # a GPU bundle run on the CPU (EDGEFG_OPENVINO_DEVICE=CPU) is another compute device: no speed order
    gpu = classify(Measured("intel-gpu", "openvino", "openvino", "GPU", "CPU", "x86_64", "x86_64", "AMD EPYC"))
    assert gpu.kind == "stand-in" and not gpu.ranks_speed and "openvino on CPU, not GPU" in gpu.text
    dev = classify(JETSON, on_device=True, node="abc123")
    assert dev.kind == "device" and not dev.stand_in and dev.ranks_speed and "abc123" in dev.text
    assert classify(Measured(None, "onnxruntime", "onnxruntime", None, None, None, "x86_64", "")).kind == "host"  # any CPU


def test_rows_recorded_before_sources_are_judged_from_their_runtime():
    old = {"runtime": "onnxruntime (stand-in for tensorrt)", "node": "local:host", "stand_in": True}
    src = source_of_row(old, "jetson-orin-nano")
    assert src.kind == "stand-in" and not src.ranks_speed
    assert source_of_row({"runtime": "onnxruntime", "node": "local:host", "stand_in": True}, "onnxruntime-cpu").kind == "host"
    assert source_of_row({"runtime": "tensorrt", "node": "f00d", "stand_in": False}, "jetson-orin-nano").kind == "device"


def _row(top1: float, p50: float, size: float, source, drop: float = 0.0) -> dict:
    return {"error": None, "top1": top1, "top1_drop": drop, "worst_class_drop": 0.0, "latency_ms_p50": p50, "size_mb": size,
            "node": "local:h", "runtime": "onnxruntime", **source.fields()}


def _trials(rows: dict[str, dict], target: str) -> list[dict]:
    return [{"id": tid, "label": tid, "status": "ok", "error": None, "targets": {target: r}} for tid, r in rows.items()]


# the Jetson figures: ONNX Runtime on x86 runs the INT8 Q/DQ graph slower than FP32, the opposite of TensorRT
JETSON_ROWS = {"fp32": (0.90, 10.8, 9.6), "int8": (0.898, 24.5, 2.9, 0.2)}


def _jetson_trials() -> list[dict]:
    return _trials({k: _row(*v[:3], classify(JETSON), *v[3:]) for k, v in JETSON_ROWS.items()}, "jetson-orin-nano")


def test_objective_latency_on_a_stand_in_ranks_by_size_and_says_so():
    trials = _jetson_trials()
    pts = [(t["id"], t["targets"]["jetson-orin-nano"]) for t in trials]
    best = best_within(pts, Budget(max_drop=1.0), 2, "latency")
    assert best["trial"] == "int8" and best["objective"] == "size" and best["objective_requested"] == "latency"
    assert "ranked by size" in best["objective_note"] and "stand-in" in best["objective_note"]
    assert best["stand_in"] is True and best["latency_source"].startswith("stand-in: onnxruntime")
    # the other objectives are asked for as they are
    assert best_within(pts, Budget(max_drop=1.0), 2, "accuracy")["objective"] == "accuracy"
    # on this host's own engine, latency still ranks by latency
    host = Measured("onnxruntime-cpu", "onnxruntime", "onnxruntime", None, None, None, "x86_64", "AMD EPYC")
    own = [(k, _row(*v[:3], classify(host), *v[3:])) for k, v in JETSON_ROWS.items()]
    mine = best_within(own, Budget(max_drop=1.0), 2, "latency")
    assert mine["trial"] == "fp32" and mine["objective"] == "latency" and mine["objective_note"] is None


def test_a_latency_budget_is_not_judged_on_stand_in_milliseconds():
    stand = _row(0.9, 24.5, 2.9, classify(JETSON))
    host = _row(0.9, 24.5, 2.9, classify(Measured("onnxruntime-cpu", "onnxruntime", "onnxruntime", None, None, None, "x86_64", "")))
    assert budget_violations(stand, Budget(max_latency_ms=20)) == []
    assert budget_violations(host, Budget(max_latency_ms=20)) == ["p50 24.50 ms > 20 ms"]
    best = best_within([("int8", stand)], Budget(max_latency_ms=20), 1)
    assert best["trial"] == "int8" and "not judged" in best["unjudged"] and "stand-in" in best["unjudged"]


def test_report_marks_stand_in_figures_everywhere(tmp_path):
    pytest.importorskip("matplotlib")
    target = "jetson-orin-nano"
    trials = _jetson_trials()
    budgets = {target: Budget(max_drop=1.0, max_latency_ms=20)}
    res = summarize(trials, [target], budgets, "latency")
    best = res["best"][target]
    assert best["trial"] == "int8" and best["objective"] == "size"
    assert res["pareto"][target] == ["int8", "fp32"]  # front on size: the stand-in's latency cannot order them
    v = best["verdict"]
    assert "slower on the stand-in" in v and f"not {target}'s" in v and "Ranked by size, not latency" in v
    result = {"model": "m", "val_images": 10, "val_data": "v", "engine": "in-process", "wall_s": 1.0, "objective": "latency",
              "targets": [target], "trials": trials, "budgets": {target: budgets[target].__dict__}, **res}
    md = markdown(result)
    assert f"**Latency is a stand-in's, not {target}'s**: onnxruntime on this host" in md
    assert "p50 ms (STAND-IN)" in md and "| STAND-IN |" in md and "**Objective latency ranked by size instead" in md
    assert "not judged" in md
    json.dumps(result)  # the fields are JSON
    title = plot_title(target, [trials[0]["targets"][target]["latency_source"]], "size_mb")
    assert "STAND-IN latency, not the device's" in title and "choice by size" in title
    png = plot_pareto(tmp_path, trials, target, res["pareto"][target], best, budgets[target])
    assert png is not None and png.stat().st_size > 1000


def test_measure_marks_a_jetson_bundle_run_in_its_stand_in(tiny_artifacts, image_folder, tmp_path):
    """The real measurement path: a TensorRT bundle timed here in ONNX Runtime says it is a stand-in."""
    from edgefg.calibration.dataset import scan
    from edgefg.deploy import deploy
    from edgefg.tune.options import TuneOptions
    from edgefg.tune.work import measure_bundle, reference_scores

    trt = deploy(tiny_artifacts["int8"], "jetson-orin-nano", tmp_path / "trt").directory
    from edgefg.manifest import load_manifest

    samples = scan(image_folder, load_manifest(trt).labels).samples
    opts = TuneOptions(model=tmp_path, data=image_folder, val_data=image_folder, targets=["jetson-orin-nano"], out=tmp_path,
                       bench_rounds=1, bench_iters=2)
    r = measure_bundle(trt, samples, reference_scores(tiny_artifacts["fp32"], samples, 8), opts)
    assert r["error"] is None and r["stand_in"] is True and r["latency_kind"] == "stand-in" and r["latency_ranks_speed"] is False
    assert r["latency_source"].startswith("stand-in: onnxruntime on this host (") and "for tensorrt on jetson-orin-nano" in r["latency_source"]
