"""The CLI contract: exit codes, one-line errors, no partial outputs, and the commands' outputs."""
import json

import cv2
import numpy as np
from click.testing import CliRunner

from edgefg.cli import cli
from tests.conftest import make_image


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert "Traceback" not in result.output


def test_bad_input_gets_one_line_and_exit_2(tiny_model, tiny_artifacts, image_folder, tmp_path):
    _one_line_error(_run("compress", tmp_path / "nope", "--data", image_folder, "-o", tmp_path / "o"), "does not exist")
    _one_line_error(_run("compress", tiny_model, "--data", tmp_path / "nodata", "-o", tmp_path / "o"), "does not exist")
    mismatch = tmp_path / "mismatch"
    (mismatch / "Alder_Flycatcher").mkdir(parents=True)
    cv2.imwrite(str(mismatch / "Alder_Flycatcher" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    _one_line_error(_run("compress", tiny_model, "--data", mismatch, "-o", tmp_path / "o"), "Alder_Flycatcher")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    _one_line_error(_run("compress", corrupt, "--data", image_folder, "-o", tmp_path / "o"), "not a valid ONNX")
    _one_line_error(_run("deploy", tiny_artifacts["fp32"], "--target", "nonexistent", "-o", tmp_path / "b"), "unknown target")
    _one_line_error(_run("deploy", tiny_artifacts["fp32"], "--target", "intel-cpu", "-o", tiny_artifacts["int8"]), "already exists")
    _one_line_error(_run("run", tmp_path / "nobundle", "--source", image_folder), "does not exist")
    _one_line_error(_run("run", image_folder, "--source", image_folder), "no manifest.json")
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_compress_with_corrupt_images_and_force(tiny_model, tmp_path):
    from tests.conftest import write_image_folder

    data = write_image_folder(tmp_path / "d", per_class=3)
    (data / "Least_Flycatcher" / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "art"
    r = _run("compress", tiny_model, "--data", data, "--recipe", "fp32", "-o", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert len(report["validation"]["skipped_corrupt"]) == 1 and report["steps"][0]["images"] == 9
    assert _run("compress", tiny_model, "--data", data, "--recipe", "fp32", "-o", out).exit_code == 2
    assert _run("compress", tiny_model, "--data", data, "--recipe", "fp32", "-o", out, "--force").exit_code == 0


def test_targets_lists_available_and_planned():
    r = _run("targets", "--json")
    assert r.exit_code == 0
    targets = {t["name"]: t for t in json.loads(r.output)}
    assert targets["intel-cpu"]["status"] == "available" and targets["onnxruntime-cpu"]["status"] == "available"
    assert {"jetson-orin-nano", "rpi5", "intel-npu"} <= set(targets)
    assert all(t["status"] in ("available", "planned") for t in targets.values())


def test_run_on_video_and_images(tiny_bundles, image_folder, tmp_path):
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    rng = np.random.default_rng(0)
    for i in range(12):
        writer.write(make_image(rng, i % 3))
    writer.release()
    out = tmp_path / "r.jsonl"
    r = _run("run", tiny_bundles["int8-intel-cpu"], "--source", video, "--max-frames", 10, "--output", out)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 10 and [x["frame"] for x in lines] == list(range(10))
    first = lines[0]
    assert len(first["top"]) == 3 and abs(sum(t["score"] for t in first["top"]) - 1) < 1e-4
    assert first["latency_ms"]["total"] > 0 and "timestamp" in first
    assert "10 frames" in r.output and "p95" in r.output
    r = _run("run", tiny_bundles["fp32-onnxruntime-cpu"], "--source", image_folder / "Least_Flycatcher" / "000.jpg")
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["source"].endswith("000.jpg")


def test_bench_json_in_given_order(tiny_bundles, tmp_path):
    order = [tiny_bundles["int8-intel-cpu"], tiny_bundles["fp32-intel-cpu"]]
    r = _run("bench", *order, "--rounds", 2, "--iters", 3, "--warmup", 1, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert "cpu" in data["machine"] or "platform" in data["machine"]
    assert [x["bundle"] for x in data["results"]] == [str(p) for p in order]
    for x in data["results"]:
        assert set(x["latency_ms"]) >= {"p50", "p90", "p99"} and x["throughput_fps"] > 0
        assert 10 < x["peak_rss_mb"] < 4000 and x["size_mb"] > 0 and x["samples"] == 6


def test_fail_fast_on_a_missing_reference_and_a_non_video_file(tiny_bundles, image_folder, tmp_path):
    bundle = tiny_bundles["fp32-intel-cpu"]
    _one_line_error(_run("validate", bundle, "--data", image_folder, "--reference", tmp_path / "nope"), "reference")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    _one_line_error(_run("run", bundle, "--source", text), "cannot open video")  # no reconnect loop for a local file
