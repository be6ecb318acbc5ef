"""Collect on the device (edgefg run --collect DIR, issue #24): the policies, the disk ring and the
per-hour limit, the folder as --agreement-data, GET /collect.tar behind the token, an unwritable folder,
and `edgefg collect export` → an ImageFolder."""
from __future__ import annotations

import csv
import io
import json
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.runtime.capture.sources import ArraySource
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.collect import CROPS, FRAMES, META, CollectOptions, Collector, Selector, TokenBucket, collect_stats, parse_policies
from edgefg.runtime.serve import RunOptions, run_pipeline
from tests.conftest import CLASSES

LABELS = ["a", "b", "c", "d", "e", "f"]


def files_under(root: Path, top: str) -> list[Path]:
    return sorted(p for p in (root / top).rglob("*") if p.is_file()) if (root / top).is_dir() else []


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class FakeClock:
    def __init__(self, t: float = 1_714_550_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def collector(tmp_path, clock=None, events=None, **kw) -> Collector:
    """A Collector on a fake serve context (6 labels, one camera 'cam', no ROI)."""
    ctx = SimpleNamespace(events=EventLog(listener=(events.append if events is not None else None)), cameras=["cam"], rois={},
                          model=SimpleNamespace(labels=LABELS, manifest=None), crop=lambda cam, image: image[8:40, 8:40])
    kw.setdefault("seed", 0)
    return Collector(ctx, CollectOptions(tmp_path / "collected", **kw), clock=clock or time.time)


def frame(probs, size=48, seed=0):
    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return SimpleNamespace(image=img, probabilities=np.asarray(probs, dtype=np.float64))


def result(i, label="a"):
    return {"frame": i, "timestamp": float(i), "source": "cam.mp4", "label": label, "score": 0.9}


def sure(k: int, p: float = 0.9) -> list[float]:
    v = [(1 - p) / (len(LABELS) - 1)] * len(LABELS)
    v[k] = p
    return v


# -- (5) the policies on crafted probability vectors -------------------------------------------------
def test_policies_pick_the_right_frames():
    s = Selector(("uncertain", "flicker", "novel"), margin=0.15, flicker_window=6)
    assert s.choose("c", np.array(sure(0)), "a")[0] == []
    chosen, margin, top = s.choose("c", np.array([0.45, 0.35, 0.1, 0.05, 0.03, 0.02]), "a")  # margin 0.10
    assert chosen == ["uncertain"] and margin == pytest.approx(0.10) and top == [0, 1, 2, 3, 4]
    assert s.choose("c", np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.02]), "a")[0] == []  # margin 0.20: sure enough
    assert s.choose("c", np.array(sure(2)), "unknown")[0] == ["novel"]  # open-set rejection while a class was top-1
    # flicker: the raw top-1 of one camera over frames; the second change within the 6-frame window is flagged
    s = Selector(("flicker",), flicker_window=6)
    seq = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    flagged = [i for i, k in enumerate(seq) if s.choose("c", np.array(sure(k)), LABELS[k])[0] == ["flicker"]]
    assert flagged == [11]  # 0→1 at 3 and 1→2 at 18 are clean changes; 1→0→1 at 10-11 flickers (flagged at the second change)
    s2 = Selector(("flicker",), flicker_window=3)  # a short window: 0 1 1 0 is two changes 3 frames apart
    assert [s2.choose("c", np.array(sure(k)), "x")[0] for k in (0, 1, 1, 0, 1)] == [[], [], [], [], ["flicker"]]
    # cameras are independent, and the window restarts when a camera's capture ends
    s = Selector(("flicker",), flicker_window=6)
    for k in (0, 1):
        s.choose("x", np.array(sure(k)), "")
    assert s.choose("y", np.array(sure(0)), "")[0] == []
    s.reset("x")
    assert s.choose("x", np.array(sure(0)), "")[0] == []
    # random: the requested fraction; several policies at once keep the frame once, with every name
    s = Selector(("random",), random_rate=0.2, rng=__import__("random").Random(1))
    hits = sum(bool(s.choose("c", np.array(sure(0)), "a")[0]) for _ in range(5000))
    assert 900 < hits < 1100
    s = Selector(("uncertain", "novel", "random"), margin=0.15, random_rate=1.0)
    assert s.choose("c", np.array([0.4, 0.35, 0.1, 0.1, 0.03, 0.02]), "unknown")[0] == ["uncertain", "novel", "random"]
    with pytest.raises(Exception, match="choose from uncertain, flicker, novel, random"):
        parse_policies("uncertain,sometimes")


def test_a_wrong_policy_name_is_a_click_error_listing_the_valid_ones(tiny_bundles, image_folder, tmp_path):
    r = CliRunner().invoke(cli, ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", str(image_folder), "--collect", str(tmp_path / "c"),
                                 "--collect-policy", "uncertain,often"])
    assert r.exit_code == 2 and "--collect-policy" in r.output and "uncertain, flicker, novel, random" in r.output
    r = CliRunner().invoke(cli, ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", str(image_folder), "--collect-margin", "0.2"])
    assert r.exit_code == 2 and "needs --collect DIR" in r.output


# -- (1) the per-hour limit (injectable clock) and the disk ring ----------------------------------
def test_token_bucket_holds_the_hourly_rate():
    clock = FakeClock(0.0)
    b = TokenBucket(60, clock)  # one a minute, a burst of one
    kept = []
    for step in range(3 * 3600):  # a frame a second for three hours
        clock.t = float(step)
        if b.take():
            kept.append(step)
    assert len(kept) in (180, 181)
    assert all(sum(t0 <= t < t0 + 3600 for t in kept) <= 60 + 1 for t0 in range(0, 2 * 3600, 60))
    unlimited = TokenBucket(0, clock)
    assert all(unlimited.take() for _ in range(1000))


def test_collector_per_hour_limit_per_camera_with_a_fake_clock(tmp_path):
    clock = FakeClock()
    c = collector(tmp_path, clock=clock, policies=("random",), random_rate=1.0, per_hour=30)
    start = clock.t
    for i in range(2 * 360):  # a chosen frame every 10 s for two hours
        clock.t = start + 10 * i
        c.on_result("cam", result(i), frame(sure(0)))
        c.flush()
    s = c.close()
    assert s["kept"] in (59, 60, 61) and s["dropped"]["rate"] == 720 - s["kept"] and s["dropped"]["busy"] == 0
    times = sorted(json.loads(p.read_text())["time"] for p in files_under(tmp_path / "collected", META))
    assert len(times) == s["kept"]
    assert all(sum(t0 <= t < t0 + 3600 for t in times) <= 30 + 1 for t0 in times)


def test_the_ring_deletes_the_oldest_frames_first(tmp_path):
    clock = FakeClock()
    c = collector(tmp_path, clock=clock, policies=("random",), random_rate=1.0, per_hour=0, max_mb=0.05)
    written = []
    for i in range(40):
        clock.t += 1.0
        c.on_result("cam", result(i), frame(sure(0), size=64, seed=i))
        c.flush()
        written.append(i)
    s = c.close()
    root = tmp_path / "collected"
    left = sorted(json.loads(p.read_text())["frame"] for p in files_under(root, META))
    assert s["kept"] == 40 and s["evicted"] == 40 - len(left) > 0
    assert left == written[-len(left):]  # the newest survive
    assert disk_bytes(root) == s["bytes"] <= 0.05e6
    # every frame on disk is whole (crop + full frame + sidecar) and a restarted run counts what is there
    assert len(files_under(root, CROPS)) == len(files_under(root, FRAMES)) == len(left)
    c2 = collector(tmp_path, clock=clock, policies=("random",), random_rate=1.0, per_hour=0, max_mb=0.05)
    c2.flush()
    assert c2.close()["bytes"] == s["bytes"]


@pytest.fixture(scope="module")
def collected(tiny_bundles, image_folder, tmp_path_factory):
    """A real run over the looped image folder: random policy at rate 1.0, no hourly limit, a 0.15 MB ring."""
    root = tmp_path_factory.mktemp("collect") / "collected"
    events = []
    opts = RunOptions(max_frames=60, loop=True, on_event=events.append,
                      outputs={"collect": CollectOptions(root, policies=("random", "uncertain"), random_rate=1.0, per_hour=0, max_mb=0.15)})
    summary = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), opts, handle_signals=False)
    return root, summary, events


def test_a_run_keeps_its_disk_bound(collected):
    root, summary, events = collected
    s = summary["collect"]
    assert summary["frames"] == 60 and s["kept"] + s["dropped"]["busy"] == 60 and s["errors"] == 0
    one_frame = max(p.stat().st_size for p in files_under(root, CROPS)) + max(p.stat().st_size for p in files_under(root, FRAMES)) + \
        max(p.stat().st_size for p in files_under(root, META))
    assert s["evicted"] > 0 and disk_bytes(root) == s["bytes"] <= 0.15e6 + one_frame
    metas = [json.loads(p.read_text()) for p in files_under(root, META)]
    m = metas[0]
    assert set(m) >= {"camera", "time", "bundle", "top", "margin", "policies", "frame", "source", "roi", "files", "decided"}
    assert m["camera"] == "default" and m["bundle"]["name"] and len(m["bundle"]["id"]) == 12 and "random" in m["policies"]
    assert [t["label"] for t in m["top"]] and len(m["top"]) == 3 and m["roi"] is None  # 3 classes: top-5 is the top-3
    assert not any(e["event"] in ("collect_error", "sink_error") for e in events)


# -- (2) the folder feeds compress --agreement-data as it is (crops only) ---------------------------
def test_collected_folder_feeds_compress_agreement_data(collected, tiny_model, image_folder, tmp_path):
    root, _, _ = collected
    crops = len(files_under(root, CROPS))
    assert crops and len(files_under(root, FRAMES)) == crops
    out = tmp_path / "art"
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--agreement-data", str(root), "--min-agreement", "0.5",
                                 "--calib-size", "12", "--latency-iters", "1", "--no-plot", "--no-check-preprocess", "-o", str(out)])
    assert r.exit_code in (0, 1), r.output
    q = json.loads((out / "report.json").read_text())["compression"][-1]
    assert q["agreement_images_found"] == crops and q["agreement_ignored_files"] == 0  # no full frames, no sidecars


# -- (3) GET /collect.tar: a valid tar with the token, 401 without ---------------------------------
def test_tar_endpoint_behind_the_token(tiny_bundles, image_folder, tmp_path):
    import cv2

    token = tmp_path / "token"
    token.write_text("collect-token-0123456789\n")
    token.chmod(0o600)
    stop, addr, box = threading.Event(), {}, {}
    img = cv2.imread(str(next(image_folder.rglob("*.jpg"))))

    def frames():
        while not stop.is_set():
            yield img
            time.sleep(0.005)

    def on_event(e):
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]

    opts = RunOptions(http="127.0.0.1:0", http_token_file=token, on_event=on_event, roi="8,8,64,64",
                      outputs={"collect": CollectOptions(tmp_path / "c", policies=("random",), random_rate=1.0, per_hour=0)})
    t = threading.Thread(target=lambda: box.setdefault("s", run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], ArraySource(frames()), opts,
                                                                          handle_signals=False)), daemon=True)
    t.start()

    def get(path, auth=True):
        req = urllib.request.Request(addr["url"] + path, headers={"Authorization": "Bearer collect-token-0123456789"} if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), None

    try:
        deadline = time.monotonic() + 30
        while "url" not in addr and time.monotonic() < deadline:
            time.sleep(0.02)
        while time.monotonic() < deadline and json.loads(get("/api/state")[1])["outputs"]["collect"]["summary"]["kept"] < 5:
            time.sleep(0.05)
        assert get("/collect.tar", auth=False)[0] == 401
        code, body, ctype = get("/collect.tar")
        assert code == 200 and ctype == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            names = tar.getnames()
            meta = json.loads(tar.extractfile(next(n for n in names if n.startswith(META + "/"))).read())
            crop = tar.extractfile(next(n for n in names if n.startswith(CROPS + "/"))).read()
        assert len(names) >= 15 and {n.split("/")[0] for n in names} == {CROPS, FRAMES, META}
        assert meta["roi"] == [8, 8, 64, 64] and meta["crop_size"] == [64, 64] and cv2.imdecode(np.frombuffer(crop, np.uint8), 1).shape == (64, 64, 3)
        code, body, _ = get(f"/collect.tar?since={time.time() + 3600:.0f}")
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            assert code == 200 and tar.getnames() == []
        assert get("/collect.tar?since=yesterday")[0] == 400
        metrics = get("/metrics")[1].decode()
        assert 'edgefg_collect_frames_total{camera="default",policy="random"}' in metrics and "# TYPE edgefg_collect_disk_bytes gauge" in metrics
    finally:
        stop.set()
        t.join(30)
    assert box["s"]["collect"]["kept"] >= 5


# -- (4) an unwritable folder: one warning, a counter, the run goes on ----------------------------
def test_unwritable_folder_is_one_warning_and_a_counter(tiny_bundles, image_folder, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")  # DIR's parent is a file: no one, root included, can create DIR
    events = []
    opts = RunOptions(max_frames=30, loop=True, on_event=events.append,
                      outputs={"collect": CollectOptions(blocker / "collected", policies=("random",), random_rate=1.0, per_hour=0)})
    summary = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), opts, handle_signals=False)
    assert summary["frames"] == 30 and summary["collect"]["errors"] > 0 and summary["collect"]["kept"] == 0
    assert summary["collect"]["dropped"]["error"] > 0 and "Not a directory" in summary["collect"]["last_error"]
    assert [e["event"] for e in events].count("collect_error") == 1 and not any(e["event"] == "sink_error" for e in events)
    # the CLI: exit 0, every frame's line, exactly one collect_error event on stderr
    r = CliRunner().invoke(cli, ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", str(image_folder), "--max-frames", "18",
                                 "--collect", str(blocker / "collected"), "--collect-policy", "random", "--collect-random-rate", "1"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 18 and r.stderr.count('"event": "collect_error"') == 1


# -- (6) collect export → a labelling queue → sorted, an ImageFolder ------------------------------
def test_export_queue_and_sorted_into_class_folders_is_an_image_folder(collected, tmp_path):
    from edgefg.calibration.dataset import scan

    root, _, _ = collected
    crops = len(files_under(root, CROPS))
    queue_dir = tmp_path / "labelling"
    r = CliRunner().invoke(cli, ["collect", "export", str(root), "--to", str(queue_dir), "--with-frames"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(queue_dir / "queue.csv", encoding="utf-8")))
    assert list(rows[0])[:8] == ["file", "camera", "time", "policy", "decided", "margin", "suggestion_1", "score_1"]
    assert "suggestion_5" in rows[0] and len(rows) == crops == len(list(queue_dir.glob("*.jpg"))) == len(list((queue_dir / ".frames").glob("*.jpg")))
    assert all(row["suggestion_1"] in CLASSES and float(row["score_1"]) >= float(row["score_2"]) for row in rows)
    assert all(row["camera"] == "default" and "random" in row["policy"].split("+") for row in rows)
    # a human sorts the crops into class folders (here: as the model suggests) → --val-data
    for row in rows:
        (queue_dir / row["suggestion_1"]).mkdir(exist_ok=True)
        (queue_dir / row["file"]).rename(queue_dir / row["suggestion_1"] / row["file"])
    images = scan(queue_dir, CLASSES)
    assert len(images.samples) == crops and images.labelled and [p.name for p in images.ignored] == ["queue.csv"]
    # --by suggestion pre-sorts; an existing non-empty folder is refused; stats count what is there
    by = tmp_path / "by"
    r = CliRunner().invoke(cli, ["collect", "export", str(root), "--to", str(by), "--by", "suggestion"])
    assert r.exit_code == 0 and len(scan(by, CLASSES).samples) == crops
    assert CliRunner().invoke(cli, ["collect", "export", str(root), "--to", str(by)]).exit_code == 2
    st = collect_stats(root)
    assert st["frames"] == crops and st["by_policy"]["random"] == crops and st["by_camera"] == {"default": crops}
    r = CliRunner().invoke(cli, ["collect", "stats", str(root)])
    assert r.exit_code == 0 and f"{crops} frames" in r.output and "by suggested class" in r.output
    assert CliRunner().invoke(cli, ["collect", "stats", str(tmp_path / "nope")]).exit_code == 2
