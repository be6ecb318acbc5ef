"""The pipeline end to end on the tiny bundle: files, images, faults, ROI, batching, smoothing, sinks."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime import RunOptions, stream
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.serve import Pipeline, run_pipeline
from tests.conftest import EDGEFG
from tests.runtime.fakes import FakeSource, synthetic_frame, write_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "clip.mkv", n=30)


def decoded_frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


@pytest.mark.parametrize("where", ["main", "capture"])
def test_stream_video_matches_direct_inference(bundle, video, where):
    results = list(stream(bundle, video, RunOptions(topk=2, preprocess_in=where)))
    assert [r["frame"] for r in results] == list(range(30))
    assert set(results[0]) >= {"frame", "timestamp", "top", "label", "score", "latency_ms"}
    assert set(results[0]["latency_ms"]) >= {"preprocess", "infer", "postprocess", "total"}
    assert results[1]["timestamp"] > results[0]["timestamp"] >= 0
    with LoadedBundle(bundle) as model:
        probs = model.classify(decoded_frames(video))
    labels = model.labels
    assert [r["top"][0]["label"] for r in results] == [labels[i] for i in probs.argmax(1)]


def test_run_pipeline_images_with_a_corrupt_file(bundle, image_folder, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(sorted(image_folder.rglob("*.jpg"))[:5]):
        (folder / f"{i}.jpg").write_bytes(p.read_bytes())
    (folder / "9_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "res.jsonl"
    summary = run_pipeline(bundle, str(folder), RunOptions(output=out), handle_signals=False)
    assert summary["frames"] == 5 and summary["skipped"] == 1
    assert {"frames", "seconds", "fps", "latency_ms", "skipped", "dropped", "stages_ms"} <= set(summary)
    assert summary["latency_ms"]["p50"] > 0 and summary["stages_ms"]["infer"]["p99"] >= summary["stages_ms"]["infer"]["p50"]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 5 and all(len(r["top"]) == 3 for r in lines)


def test_truncated_video_keeps_every_decodable_frame(bundle, video, tmp_path):
    data = Path(video).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    seen = []
    results = list(stream(bundle, str(cut), RunOptions(on_event=seen.append)))
    assert 5 < len(results) < 30
    assert [r["frame"] for r in results] == list(range(len(results)))
    assert any(e["event"] == "source_ended" for e in seen)


@pytest.mark.parametrize("where", ["main", "capture"])
def test_corrupt_frames_are_skipped_and_counted(bundle, where):
    src = FakeSource(n=20, live=False, corrupt={2: None, 6: "float", 11: "empty", 15: "gray"})
    pipe = Pipeline(bundle, src, RunOptions(preprocess_in=where))
    frames = [r["frame"] for r, _ in pipe.results()]
    pipe.close()
    assert frames == [i for i in range(20) if i not in (2, 6, 11)]
    assert pipe.summary()["skipped"] == 3


def test_roi_crop(bundle):
    img = synthetic_frame(3, 200, 300)
    img[50:150, 100:200] = synthetic_frame(7, 100, 100)
    r = next(stream(bundle, FakeSource(n=1, live=False, image=img), RunOptions(roi="100,50,100,100", topk=3)))
    frac = next(stream(bundle, FakeSource(n=1, live=False, image=img), RunOptions(roi=(1 / 3, 0.25, 1 / 3, 0.5), topk=3)))
    with LoadedBundle(bundle) as model:
        p = model.classify([img[50:150, 100:200]])[0]
    expect = model.labels[int(p.argmax())]
    assert r["top"][0]["label"] == expect and frac["top"][0]["label"] == expect
    with pytest.raises(EdgefgError, match="outside"):
        list(stream(bundle, FakeSource(n=1, live=False, image=img), RunOptions(roi="400,10,50,50")))
    with pytest.raises(EdgefgError, match="--roi"):
        RunOptions and Pipeline(bundle, FakeSource(n=1), RunOptions(roi="1,2,3"))


def test_micro_batch_gives_the_same_results(bundle, video):
    one = list(stream(bundle, video, RunOptions()))
    four = list(stream(bundle, video, RunOptions(batch=4, batch_wait_ms=50)))
    assert [r["frame"] for r in four] == list(range(30))
    assert max(r.get("batch", 1) for r in four) == 4
    for a, b in zip(one, four):
        assert a["top"][0]["label"] == b["top"][0]["label"]
        assert abs(a["top"][0]["score"] - b["top"][0]["score"]) < 1e-4


def test_events_mode_and_smoothing(bundle, video, tmp_path):
    out = tmp_path / "events.jsonl"
    opts = RunOptions(output=out, events=True, smooth="majority:3", min_confidence=0.0)
    summary = run_pipeline(bundle, video, opts, handle_signals=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == summary["label_changes"] >= 1 and summary["frames"] == 30
    assert all(r["changed"] for r in lines)
    assert all(a["label"] != b["label"] for a, b in zip(lines, lines[1:]))
    # everything below an impossible confidence is unknown
    unk = list(stream(bundle, video, RunOptions(min_confidence=1.01, max_frames=5)))
    assert {r["label"] for r in unk} == {"unknown"}


def test_annotated_video_and_rotation(bundle, video, tmp_path):
    out = tmp_path / "log" / "res.jsonl"
    summary = run_pipeline(bundle, video, RunOptions(output=out, rotate_mb=0.002, rotate_keep=50, save_video=tmp_path / "ann.mkv", roi="10,10,60,60"),
                           handle_signals=False)
    files = sorted(out.parent.iterdir())
    assert len(files) > 2
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert sorted(r["frame"] for r in lines) == list(range(30)) and summary["frames"] == 30
    assert all(f.stat().st_size < 2000 + 600 for f in files)
    frames = decoded_frames(tmp_path / "ann.mkv")
    assert len(frames) == 30 and frames[0].shape == (96, 128, 3)
    assert not np.array_equal(frames[0], decoded_frames(video)[0])  # drawn on


def test_loop_and_max_frames(bundle, video):
    results = list(stream(bundle, video, RunOptions(loop=True, max_frames=75)))
    assert len(results) == 75 and results[30]["frame"] == 0


def test_rss_flat_over_many_frames(bundle):
    """A reduced soak (benchmarks/soak.py runs ≥10,000 frames): memory must not grow with frames."""
    import psutil

    proc = psutil.Process()
    pipe = Pipeline(bundle, FakeSource(n=3000, live=False, image=synthetic_frame(1)), RunOptions(smooth="ema:0.5"))
    rss = {}
    for _r, _ in pipe.results():
        n = pipe.frames
        if n in (600, 3000):
            rss[n] = proc.memory_info().rss
    pipe.close()
    assert pipe.frames == 3000
    growth = (rss[3000] - rss[600]) / rss[600]
    assert growth < 0.05, f"RSS grew {growth:.1%} from frame 600 to 3000"


def test_sigterm_finishes_cleanly(bundle, video, tmp_path):
    out = tmp_path / "sig.jsonl"
    env = {**os.environ, "EDGEFG_NUM_THREADS": "1"}
    proc = subprocess.Popen([*EDGEFG, "run", str(bundle), "--source", video, "--loop", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000) and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert '"signal": "SIGTERM"' in err and "frames in" in err
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(x)["top"] for x in lines)  # every line complete
    frames = int(err.strip().splitlines()[-1].split()[0])
    assert frames == len(lines)


def test_live_source_drops_old_frames_and_latency_stays_bounded(bundle):
    model = LoadedBundle(bundle)
    fast = model.scores

    def slow_scores(x):  # inference at ~50 FPS, camera at ~500 FPS
        time.sleep(0.02)
        return fast(x)

    model.scores = slow_scores
    cam = FakeSource(n=400, live=True, interval=0.002)
    cam.reopenable = False  # end the run when the fake camera ends
    pipe = Pipeline(model, cam, RunOptions())
    results = [r for r, _ in pipe.results()]
    s = pipe.summary()
    pipe.close()
    model.close()
    assert s["dropped"] > 150 and s["frames"] < 200
    assert s["frames"] + s["dropped"] == s["frames_read"]
    assert s["stages_ms"]["end_to_end"]["p95"] < 200  # a fresh frame each time, not a growing queue
    assert all(b["frame"] > a["frame"] for a, b in zip(results, results[1:]))


def test_camera_not_up_at_start_is_retried_then_given_up(bundle):
    from edgefg.errors import SourceError

    attempts = []

    def camera():
        attempts.append(time.monotonic())
        raise SourceError("no camera yet")

    seen = []
    opts = RunOptions(max_retries=2, backoff_initial_s=0.01, on_event=seen.append)
    with pytest.raises(SourceError, match="2 retries"):
        list(stream(bundle, camera, opts))
    assert len(attempts) == 3  # the first open + 2 retries
    assert [e["event"] for e in seen].count("source_reconnect") == 2


def test_a_failing_sink_does_not_stop_the_camera(bundle, video, tmp_path, monkeypatch):
    from edgefg.runtime.outputs import sinks

    def full_disk(self, result, frame=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sinks.JsonlSink, "write", full_disk)
    seen = []
    summary = run_pipeline(bundle, video, RunOptions(output=tmp_path / "x.jsonl", on_event=seen.append), handle_signals=False)
    assert summary["frames"] == 30
    assert [e["event"] for e in seen].count("sink_error") == 1


def test_latency_is_processing_and_fps_pacing_is_reported_as_queueing(bundle, video):
    """A file read ahead and paced by --fps waits in its buffer: that wait is queueing, reported apart,
    not latency the pipeline adds (the page and the summary said 'p50 312 ms' for a ~20 ms pipeline)."""
    from edgefg.runtime.capture.cameras import CameraConfig
    from edgefg.runtime.loop.camera_loop import CameraLoop
    from edgefg.runtime.serve import format_summary

    fps = 25.0
    loop = CameraLoop(bundle, [CameraConfig("cam", str(video), fps=fps)], RunOptions())
    try:
        results = [r for _, r, _ in loop.run()]
        s = loop.summary()
    finally:
        loop.close()
    assert len(results) == 30
    for r in results:
        lat = r["latency_ms"]
        assert lat["queue"] >= 0 and lat["processing"] >= 0
        assert abs(lat["queue"] + lat["processing"] - lat["end_to_end"]) < 0.01  # the two parts of capture → result
    interval_ms = 1e3 / fps
    # the reader fills the buffer at once, so paced frames wait about an interval or more: queueing
    assert s["queue_ms"]["p50"] > 0.5 * interval_ms
    cam = s["cameras"]["cam"]
    assert cam["latency_ms"]["p50"] < cam["queue_ms"]["p50"]
    assert cam["end_to_end_ms"]["p50"] > cam["latency_ms"]["p50"]
    line = format_summary(s)
    assert f"latency p50 {s['latency_ms']['p50']:.2f} ms" in line and "queued p50" in line


def test_one_source_summary_reports_processing_latency_and_queueing_apart(bundle, video):
    pipe = Pipeline(bundle, str(video), RunOptions())
    try:
        results = [r for r, _ in pipe.results()]
        s = pipe.summary()
    finally:
        pipe.close()
    assert len(results) == 30
    assert s["latency_ms"]["p50"] <= s["stages_ms"]["end_to_end"]["p50"]
    assert s["latency_ms"]["p50"] == pytest.approx(s["stages_ms"]["processing"]["p50"], abs=1e-3)
    assert set(s["queue_ms"]) >= {"p50", "p95"}
