"""bench --data: the fastest bundle within the tolerance of the first, chosen from both results."""
import json
import math

import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.validate.fastest import fastest_line, join_accuracy


def _bench(*p50_size):
    return {"machine": {}, "settings": {"batch": 1}, "results": [
        {"bundle": f"b{i}", "latency_ms": {"p50": p}, "size_mb": s} for i, (p, s) in enumerate(p50_size)]}


def _compared(*top1, labelled=True):
    return {"data": "test", "images": 100, "labelled": labelled, "reference": "b0", "bundles": [
        {"bundle": f"b{i}", "accuracy": {"top1": t} if t is not None else None, "parity": None if i == 0 else {"top1_agreement": 0.99}}
        for i, t in enumerate(top1)]}


def test_the_fastest_inside_the_tolerance_wins_not_the_fastest():
    r = join_accuracy(_bench((10.0, 8.0), (2.0, 2.0), (4.0, 2.5)), _compared(0.95, 0.92, 0.945), max_drop=1.0)
    assert [x["within"] for x in r["results"]] == [True, False, True]  # b1: 3 pt down, b2: 0.5 pt
    assert r["fastest_within"]["bundle"] == "b2" and math.isclose(r["fastest_within"]["speedup"], 2.5)
    assert math.isclose(r["fastest_within"]["size_ratio"], 3.2) and math.isclose(r["results"][2]["top1_drop_pts"], 0.5)
    line = fastest_line(r)
    assert "b2" in line and "2.50× faster" in line and "-0.50 pt" in line
    wider = join_accuracy(_bench((10.0, 8.0), (2.0, 2.0), (4.0, 2.5)), _compared(0.95, 0.92, 0.945), max_drop=3.0)
    assert wider["fastest_within"]["bundle"] == "b1"  # exactly at the limit counts as within


def test_a_class_significantly_worse_is_not_within_whatever_the_mean_says():
    compared = _compared(0.95, 0.949, 0.945)
    compared["bundles"][1]["classes_significantly_worse"] = 1  # 0.1 pt on average, one class collapsed
    r = join_accuracy(_bench((10.0, 8.0), (2.0, 2.0), (4.0, 2.5)), compared, max_drop=1.0)
    assert [x["within"] for x in r["results"]] == [True, False, True] and r["fastest_within"]["bundle"] == "b2"
    assert "no class significantly worse" in fastest_line(r)


def test_the_reference_itself_when_nothing_else_is_faster_and_within():
    r = join_accuracy(_bench((3.0, 8.0), (5.0, 2.0)), _compared(0.95, 0.95), max_drop=1.0)
    assert r["fastest_within"]["bundle"] == "b0" and "itself" in fastest_line(r)


def test_unlabelled_data_names_no_choice():
    r = join_accuracy(_bench((3.0, 8.0), (2.0, 2.0)), _compared(None, None, labelled=False), max_drop=1.0)
    assert r["fastest_within"] is None and "labelled" in fastest_line(r)


def test_bench_data_through_the_command(tiny_bundles, image_folder, tmp_path):
    order = [tiny_bundles["fp32-onnxruntime-cpu"], tiny_bundles["int8-onnxruntime-cpu"], tiny_bundles["int8-intel-cpu"]]
    args = ["bench", *map(str, order), "--rounds", "2", "--iters", "3", "--warmup", "1", "--data", str(image_folder), "--max-drop", "100",
            "--json", str(tmp_path / "b.json")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert [x["bundle"] for x in data["results"]] == [str(p) for p in order]
    assert data["results"][0]["top1_drop_pts"] == 0 and all(x["within"] and 0 <= x["top1"] <= 1 for x in data["results"])
    fastest = min(data["results"], key=lambda x: x["latency_ms"]["p50"])
    assert data["fastest_within"]["bundle"] == fastest["bundle"]  # everything is within 100 pt
    assert "Fastest within 100 pt" in r.output and "top-1 %" in r.output


@pytest.mark.parametrize("extra", [[], ["--data", "nowhere"]])
def test_bench_data_needs_two_bundles_and_a_real_folder(tiny_bundles, image_folder, extra):
    one = CliRunner().invoke(cli, ["bench", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--data", str(image_folder)])
    assert one.exit_code == 2 and "at least one more" in one.output
    if extra:
        two = CliRunner().invoke(cli, ["bench", str(tiny_bundles["fp32-onnxruntime-cpu"]), str(tiny_bundles["int8-onnxruntime-cpu"]),
                                       "--rounds", "1", "--iters", "1", "--warmup", "0", *extra])
        assert two.exit_code == 2 and "nowhere" in two.output and "Traceback" not in two.output
