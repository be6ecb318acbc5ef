"""The in-process sweep (Ray unimportable), --resume after kill -9, failing trials, budgets, bad input."""
from __future__ import annotations

import json
import signal
import time

from click.testing import CliRunner

from edgefg.cli import cli
from tests.tune.conftest import edgefg_without_ray, tune_args


def test_sweep_in_process_without_ray(inprocess_sweep):
    res, out = inprocess_sweep["result"], inprocess_sweep["dir"]
    assert res["engine"].startswith("in-process")
    assert len(res["trials"]) == 4 and all(t["status"] == "ok" for t in res["trials"])
    assert {t["label"] for t in res["trials"]} == {"fp32", "fp32 48px", "int8", "int8 48px"}
    # one artifact per distinct compress configuration; the FP32 reference is the fp32 trial's own
    assert len(list((out / "artifacts").iterdir())) == 4
    fp32 = next(t for t in res["trials"] if t["label"] == "fp32")
    assert fp32["artifact_reused"] and fp32["artifact"] == res["reference"]["artifact"]
    for t in res["trials"]:
        for target in ("intel-cpu", "onnxruntime-cpu"):
            r = t["targets"][target]
            # the target's own engine on a CPU of its kind: this host's latency, not a stand-in's
            assert r["error"] is None and r["stand_in"] is False and r["latency_kind"] == "host" and r["node"].startswith("local:")
            assert r["latency_source"].startswith(f"this host: {r['runtime']} on this host (")
            assert r["images"] == 15 and 0.0 <= r["top1"] <= 1.0 and r["latency_ms_p50"] > 0 and r["size_mb"] > 0
            assert r["top1_drop"] == 100 * (r["reference_top1"] - r["top1"])
    assert fp32["targets"]["onnxruntime-cpu"]["top1_drop"] == 0.0 and fp32["targets"]["onnxruntime-cpu"]["agreement"] == 1.0
    int8 = next(t for t in res["trials"] if t["label"] == "int8")
    assert int8["targets"]["intel-cpu"]["size_mb"] < 0.7 * fp32["targets"]["intel-cpu"]["size_mb"]
    for target in ("intel-cpu", "onnxruntime-cpu"):
        assert res["pareto"][target] and set(res["pareto"][target]) <= {t["id"] for t in res["trials"]}
        best = res["best"][target]
        assert best["trial"] in {t["id"] for t in res["trials"]}
        assert json.loads((out / "best" / target / "manifest.json").read_text())["target"] == target
        assert (out / f"pareto-{target}.png").stat().st_size > 1000
    md = (out / "tune.md").read_text()
    assert "Chosen: `" in md and "Objective: **latency**" in md and "agreement [95 %]" in md
    assert "Latency: this host: openvino on this host (" in md and "STAND-IN" not in md
    assert len(list((out / "results").glob("*.json"))) == 4


def test_sweep_scores_agreement_frames_and_judges_by_evidence(inprocess_sweep):
    """Every trial is scored on the unlabelled frames against FP32; the per-class record behind the
    evidence gate is kept; the choice is the fastest within budget and says what it buys."""
    res = inprocess_sweep["result"]
    frames = res["agreement_data"]
    assert frames["used"] == frames["found"] == 13 and frames["also_in_training_data"] == 1
    assert res["val_images"] == 15 and res["objective"] == "latency"
    for t in res["trials"]:
        for target in ("intel-cpu", "onnxruntime-cpu"):
            r = t["targets"][target]
            a = r["frame_agreement"]
            assert a["images"] == 13 and a["agree"] == round(a["agreement"] * 13) and a["ci95"][0] <= a["agreement"] <= a["ci95"][1]
            assert r["images"] == 15 and r["classes"] == 3 and r["images_per_class"] == {"min": 5, "median": 5}
            assert all(c["drop_pts"] > 0 and "p_adjusted" in c for c in r["class_losses"])
            if t["label"] == "fp32":
                assert a["agreement"] == 1.0 and r["class_losses"] == []
    for target in ("intel-cpu", "onnxruntime-cpu"):
        best = res["best"][target]
        inside = [(t["id"], t["targets"][target]) for t in res["trials"] if t["targets"][target]["within_budget"]]
        fastest = min(inside, key=lambda p: (p[1]["latency_ms_p50"], p[1]["size_mb"], -p[1]["top1"]))
        assert best["trial"] == fastest[0] and best["objective"] == "latency"
        assert best["verdict"].startswith(next(t["label"] for t in res["trials"] if t["id"] == best["trial"]) + ":")


def test_resume_after_kill_9(sweep_inputs, tmp_path):
    out = tmp_path / "killed"
    # the baseline + one seeded pick, one target: enough to interrupt, and cheap
    args = tune_args(sweep_inputs, out, "--trials", 2)
    i = args.index("intel-cpu")
    del args[i - 1 : i + 1]  # drop "--target intel-cpu"
    p = edgefg_without_ray(*args, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "results").glob("*.json")):
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    finished = {f.name: f.read_text() for f in (out / "results").glob("*.json")}
    assert len(finished) == 1 and not (out / "tune.json").exists()

    r = edgefg_without_ray(*args, cwd=tmp_path)
    assert r.wait(60) == 2 and "--resume" in r.communicate()[1]  # no silent overwrite

    r = edgefg_without_ray(*args, "--resume", cwd=tmp_path)
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-3000:]
    for name, text in finished.items():  # finished trials are kept as they were, not re-run
        assert (out / "results" / name).read_text() == text
    res = json.loads((out / "tune.json").read_text())
    assert len(res["trials"]) == 2 and all(t["status"] == "ok" for t in res["trials"])


def test_failing_trial_is_recorded_and_unmet_budget_exits_1(sweep_inputs, tmp_path):
    space = tmp_path / "tokens.toml"
    space.write_text('[space]\nprecision = ["fp32"]\ntoken_keep = ["none", 0.5]\n')
    out = tmp_path / "t"
    args = ["tune", sweep_inputs["model"], "--data", sweep_inputs["train"], "--val-data", sweep_inputs["val"], "--target", "intel-cpu",
            "--space", space, "--max-latency-ms", "0.000001", "--bench-iters", "3", "-o", out]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 1, r.output
    assert "error: no trial meets the budget for intel-cpu" in r.output
    res = json.loads((out / "tune.json").read_text())  # the report is written all the same
    failed = [t for t in res["trials"] if t["status"] == "failed"]
    assert len(res["trials"]) == 2 and len(failed) == 1
    err = failed[0]["error"]
    assert err.startswith("compress: ") and "\n" not in err and "vit" in err.lower()
    assert res["best"]["intel-cpu"]["trial"] is None and "p50" in res["best"]["intel-cpu"]["reason"]
    assert not (out / "best" / "intel-cpu").exists()
    assert "Failed trials" in (out / "tune.md").read_text()


def test_bad_input_is_one_line(sweep_inputs, tmp_path):
    base = ["tune", str(sweep_inputs["model"]), "--data", str(sweep_inputs["train"]), "--val-data", str(sweep_inputs["val"]), "-o", str(tmp_path / "x")]
    for extra, message in (
        (["--target", "intel-cpu", "--space", str(tmp_path / "none.toml")], "search space file"),
        (["--target", "no-such-board"], "unknown target 'no-such-board'"),
        (["--target", "intel-cpu", "--resume"], "nothing to resume"),
        (["--target", "intel-cpu", "--min-agreement", "0.9"], "--min-agreement needs --agreement-data"),
        (["--target", "intel-cpu", "--agreement-data", str(tmp_path / "no-frames")], "--agreement-data"),
    ):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and message in r.output and "Traceback" not in r.output


def test_pruned_and_input_size_distilled_trials_deploy_to_rpi5(sweep_inputs, tmp_path):
    """The whole CNN space reaches the ARM target: pruned + distilled weights and the input-size
    distillation knob become LiteRT bundles (built from the artifact's own weights)."""
    space = tmp_path / "space.toml"
    space.write_text('[space]\nprecision = ["fp32"]\nprune = [0.0, 0.3]\nresolution = ["none", 48]\nresolution_kd = [true]\ncalib_size = [12]\n')
    out = tmp_path / "rpi"
    args = ["tune", sweep_inputs["model"], "--data", sweep_inputs["train"], "--val-data", sweep_inputs["val"], "--target", "rpi5", "--space", space,
            "--train-max-steps", 2, "--bench-iters", 3, "--max-drop", 100, "-o", out]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "tune.json").read_text())
    labels = {t["label"]: t for t in res["trials"]}
    assert set(labels) == {"fp32", "fp32 48px+kd1", "fp32 prune0.3+kd1", "fp32 48px+kd1 prune0.3+kd1"}
    assert all(t["status"] == "ok" for t in res["trials"]), [t["error"] for t in res["trials"]]
    for label, t in labels.items():
        m = json.loads((out / "trials" / t["id"] / "rpi5" / "manifest.json").read_text())
        assert m["backend"] == "tflite" and m["preprocess"]["input_size"] == ([48, 48] if "48px" in label else [64, 64])
    pruned, full = labels["fp32 prune0.3+kd1"]["targets"]["rpi5"], labels["fp32"]["targets"]["rpi5"]
    assert pruned["size_mb"] < 0.9 * full["size_mb"]


def test_engine_is_a_knob_where_the_device_runs_several(sweep_inputs, tmp_path):
    """intel-cpu's profile lists other engines of the same CPU: the sweep measures OpenVINO and LiteRT
    bundles of one INT8 trial side by side; a target without that engine records a one-line error."""
    space = tmp_path / "space.toml"
    space.write_text('[space]\nprecision = ["fp32"]\nengine = ["none", "tflite"]\n')
    out = tmp_path / "engines"
    args = ["tune", sweep_inputs["model"], "--data", sweep_inputs["train"], "--val-data", sweep_inputs["val"], "--target", "intel-cpu",
            "--target", "onnxruntime-cpu", "--space", space, "--bench-iters", 3, "--max-drop", 100, "-o", out]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "tune.json").read_text())
    by = {t["label"]: t for t in res["trials"]}
    assert set(by) == {"fp32", "fp32 @tflite"}
    lite = by["fp32 @tflite"]
    assert lite["artifact_reused"] and lite["compress_key"] == by["fp32"]["compress_key"]  # one artifact, two engines
    m = json.loads((out / "trials" / lite["id"] / "intel-cpu" / "manifest.json").read_text())
    assert m["target"] == "intel-cpu" and m["backend"] == "tflite"
    assert lite["targets"]["intel-cpu"]["error"] is None and lite["targets"]["intel-cpu"]["agreement"] > 0.9
    assert lite["status"] == "partial" and "has no engine 'tflite'" in lite["targets"]["onnxruntime-cpu"]["error"]
    assert res["best"]["intel-cpu"]["trial"] in {t["id"] for t in res["trials"]}


def test_deploy_engine_flag(tiny_artifacts, tmp_path):
    r = CliRunner().invoke(cli, ["deploy", str(tiny_artifacts["fp32"]), "--target", "intel-cpu", "--engine", "onnxruntime", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["backend"] == "onnxruntime"
    r = CliRunner().invoke(cli, ["deploy", str(tiny_artifacts["fp32"]), "--target", "rpi5", "--engine", "openvino", "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "target 'rpi5' has no engine 'openvino'" in r.output and not (tmp_path / "c").exists()
