"""Many cameras on one model: names everywhere, cross-camera micro-batches, per-camera settings, and a
dead or stalled camera that never holds up the others."""
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgefg.errors import EdgefgError, SourceError
from edgefg.runtime import RunOptions
from edgefg.runtime.capture.cameras import CameraConfig, load_cameras, parse_source_args
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.loop.multicam import MultiPipeline
from edgefg.runtime.serve import run_cameras
from tests.conftest import EDGEFG
from tests.runtime.fakes import FakeSource, synthetic_frame, write_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(bundle):
    m = LoadedBundle(bundle)
    yield m
    m.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("mc") / "clip.mkv", n=20)


def test_source_args_and_config(tmp_path, monkeypatch):
    assert parse_source_args(["clip.mp4"]) == [CameraConfig("default", "clip.mp4")]
    assert parse_source_args(["rtsp://cam/x?a=b"])[0].name == "default"  # a query string is not a name
    cams = parse_source_args(["feeder=rtsp://u:p@cam/s?x=1", "pond=0"])
    assert [(c.name, c.source) for c in cams] == [("feeder", "rtsp://u:p@cam/s?x=1"), ("pond", "0")]
    with pytest.raises(EdgefgError, match="no camera name"):
        parse_source_args(["a=0", "clip.mp4"])
    with pytest.raises(EdgefgError, match="twice"):
        parse_source_args(["a=0", "a=1"])
    cfg = tmp_path / "cams.toml"
    monkeypatch.setenv("POND_URL", "rtsp://secret@pond/1")
    cfg.write_text('[defaults]\nsmooth = "ema:0.5"\n[cameras.feeder]\nsource = "0"\nroi = [0.1, 0.1, 0.5, 0.5]\nfps = 5\n'
                   '[cameras.pond]\nsource_env = "POND_URL"\nsmooth = "none"\nmin_confidence = 0.4\n')
    a, b = load_cameras(cfg)
    assert (a.name, a.source, a.fps, a.overrides) == ("feeder", "0", 5, {"roi": "0.1,0.1,0.5,0.5", "smooth": "ema:0.5"})
    assert (b.name, b.source, b.overrides) == ("pond", "rtsp://secret@pond/1", {"smooth": "none", "min_confidence": 0.4})
    # keys are the run options' own names, checked by the options' own types (one declaration)
    cfg.write_text('[cameras.x]\nsource = "0"\nstall_timeout = 3\nloop = true\nmin_margin = 0.2\n')
    assert load_cameras(cfg)[0].overrides == {"stall_timeout_s": 3.0, "loop": True, "min_margin": 0.2}
    for bad, msg in [('[cameras.x]\nsource = "0"\nfsp = 3\n', "unknown key 'fsp'"), ('[cameras.x]\nsource = "0"\nfps = -1\n', "must be > 0"),
                     ('[cameras."a b"]\nsource = "0"\n', "bad camera name"), ("[cameras.x]\n", "exactly one of source"),
                     ("cameras = 3\n", "no \\[cameras.NAME\\]"), ("[cameras.x\n", "not valid TOML"),
                     ('[cameras.x]\nsource = "0"\nfps = "fast"\n', "wrong type"),
                     ('[cameras.x]\nsource = "0"\nmin_confidence = 1.5\n', "min_confidence: 1.5 is not in the range"),
                     ('[cameras.x]\nsource = "0"\nloop = "yes"\n', "loop has the wrong type"),
                     ('[cameras.x]\nsource = "0"\nsmooth = 3\n', "smooth has the wrong type"),
                     ('[cameras.x]\nsource = "0"\nstall_timeout = "3"\n', "stall_timeout has the wrong type"),
                     ('[cameras.x]\nsource = "0"\nbatch = 4\n', "unknown key 'batch'")]:
        cfg.write_text(bad)
        with pytest.raises(EdgefgError, match=msg):
            load_cameras(cfg)


def test_three_cameras_one_model_batched_and_named(model, video):
    cams = [CameraConfig("a", video), CameraConfig("b", video), CameraConfig("c", "fake")]
    pipe = MultiPipeline(model, cams, RunOptions(batch_wait_ms=50), sources={"c": FakeSource(n=20, live=False)})
    got: dict[str, list] = {"a": [], "b": [], "c": []}
    for cam, r, _ in pipe.results():
        assert r["camera"] == cam.name
        got[cam.name].append(r)
    s = pipe.summary()
    pipe.close()
    assert {n: [r["frame"] for r in v] for n, v in got.items()} == {n: list(range(20)) for n in "abc"}  # files: nothing dropped
    assert s["mean_batch"] > 1.5 and max(r.get("batch", 1) for r in got["a"]) == 3  # frames of different cameras share model calls
    assert s["batches"] < 60
    probs = model.classify([synthetic_frame(i) for i in range(20)])
    assert [r["top"][0]["label"] for r in got["c"]] == [model.labels[i] for i in probs.argmax(1)]
    assert [r["top"][0]["label"] for r in got["a"]] == [r["top"][0]["label"] for r in got["b"]]


def test_stalled_and_dead_cameras_do_not_hold_up_the_others(model):
    stall = FakeSource(n=10**6, live=True, stall_at=5, stall_s=4.0, interval=0.01, spec="stall")
    good = FakeSource(n=10**6, live=True, interval=0.01, spec="good")

    def dead():
        raise SourceError("camera unplugged")

    events = []
    opts = RunOptions(stall_timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2, on_event=events.append)
    pipe = MultiPipeline(model, [CameraConfig("stall", "x"), CameraConfig("good", "y"), CameraConfig("dead", "z")], opts,
                         sources={"stall": stall, "good": good, "dead": dead})
    times: dict[str, list[float]] = {"stall": [], "good": []}
    t0 = time.monotonic()
    for cam, _r, _ in pipe.results():
        times[cam.name].append(time.monotonic() - t0)
        if time.monotonic() - t0 > 3.0:
            pipe.stop()
    snap = pipe.snapshot()
    pipe.close()
    g = np.array(times["good"])
    assert len(g) > 100 and np.diff(g).max() < 0.5, "the good camera waited on the stalled one"
    assert snap["cameras"]["stall"]["stalls"] >= 1
    assert snap["cameras"]["dead"]["frames"] == 0
    kinds = {(e["event"], e.get("camera")) for e in events}
    assert ("source_stalled", "stall") in kinds and ("source_open_failed", "dead") in kinds


def test_fps_cap_per_camera(model):
    fast = FakeSource(n=10**6, live=True, interval=0.002)
    capped = FakeSource(n=10**6, live=True, interval=0.002)
    pipe = MultiPipeline(model, [CameraConfig("fast", "x"), CameraConfig("capped", "y", fps=10)], RunOptions(), sources={"fast": fast, "capped": capped})
    t0 = time.monotonic()
    for _ in pipe.results():
        if time.monotonic() - t0 > 2.0:
            pipe.stop()
    s = pipe.summary()
    pipe.close()
    assert 12 <= s["cameras"]["capped"]["frames"] <= 23
    assert s["cameras"]["fast"]["frames"] > 3 * s["cameras"]["capped"]["frames"]


def test_per_camera_roi_and_thresholds(model):
    img = synthetic_frame(3, 200, 300)
    img[50:150, 100:200] = synthetic_frame(7, 100, 100)
    cams = [CameraConfig("crop", "x", overrides={"roi": "100,50,100,100"}), CameraConfig("strict", "y", overrides={"min_confidence": 1.01})]
    pipe = MultiPipeline(model, cams, RunOptions(), sources={"crop": FakeSource(n=3, live=False, image=img), "strict": FakeSource(n=3, live=False, image=img)})
    out = {}
    for cam, r, _ in pipe.results():
        out.setdefault(cam.name, []).append(r)
    pipe.close()
    expect = model.labels[int(model.classify([img[50:150, 100:200]])[0].argmax())]
    assert {r["top"][0]["label"] for r in out["crop"]} == {expect}
    assert {r["label"] for r in out["strict"]} == {"unknown"}


def test_stream_cameras_api(model):
    from edgefg.runtime import stream_cameras

    out = list(stream_cameras(model, [CameraConfig("a", "x"), CameraConfig("b", "y")], RunOptions(events=True),
                              sources={"a": FakeSource(n=5, live=False), "b": FakeSource(n=5, live=False)}))
    assert {r["camera"] for r in out} == {"a", "b"} and all(r["changed"] for r in out)


def test_run_cameras_writes_named_lines_and_summary(bundle, video, tmp_path):
    out = tmp_path / "res.jsonl"
    summary = run_cameras(bundle, [CameraConfig("north", video), CameraConfig("south", video)], RunOptions(output=out), handle_signals=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted({r["camera"] for r in lines}) == ["north", "south"] and len(lines) == 40
    assert summary["cameras"]["north"]["frames"] == 20 and summary["frames"] == 40


def test_cli_several_sources_and_single_source_unchanged(bundle, video, tmp_path):
    out = tmp_path / "multi.jsonl"
    p = subprocess.run([*EDGEFG, "run", str(bundle), "--source", f"a={video}", "--source", f"b={video}", "--output", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "a: 20 frames" in p.stderr.splitlines()[-1]
    assert {json.loads(x)["camera"] for x in out.read_text().splitlines()} == {"a", "b"}
    single = tmp_path / "single.jsonl"
    p = subprocess.run([*EDGEFG, "run", str(bundle), "--source", video, "--output", str(single)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert all("camera" not in json.loads(x) for x in single.read_text().splitlines())
    p = subprocess.run([*EDGEFG, "run", str(bundle), "--source", "a=0", "--source", video], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: --source") and "Traceback" not in p.stderr


def test_a_camera_may_override_only_what_its_sections_mark_per_camera():
    from edgefg.runtime.loop.camera_loop import RunOptions as Opts

    with pytest.raises(EdgefgError, match="cannot set batch"):
        CameraConfig("x", "0", overrides={"batch": 4})
    cam = CameraConfig("x", "0", overrides={"min_confidence": 0.7})
    run = Opts(min_confidence=0.2, min_margin=0.1)
    assert (cam.options(run).min_confidence, cam.options(run).min_margin) == (0.7, 0.1)
    assert run.min_confidence == 0.2  # the run's own options are not changed
