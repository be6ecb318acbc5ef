"""A bundle with enrolled classes (edgefg enroll) downstream: validate, smoothing, open-set rejection,
MQTT / Home Assistant, the live page and compare see the new classes as any other."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefg.runtime import RunOptions, stream
from edgefg.runtime.engine.bundle import LoadedBundle
from tests.conftest import CLASSES, EDGEFG, write_image_folder
from tests.test_enroll import NEW, new_image, run, write_new

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, tiny_artifacts, image_folder) -> dict[str, Path]:
    """fp32 bundles with NEW enrolled from 5 images each (intel-cpu and onnxruntime-cpu), their inputs, held-out sets."""
    from edgefg.deploy import deploy
    from edgefg.enroll import enroll

    root = tmp_path_factory.mktemp("enrolled")
    images = write_new(root / "enrol", 5, 1)
    out = {"images": images}
    for target in ("intel-cpu", "onnxruntime-cpu"):
        src = deploy(tiny_artifacts["fp32"], target, root / f"src-{target}", embedding=True, data=image_folder).directory
        out[f"src-{target}"] = src
        out[target] = enroll(src, root / f"new-{target}", images=images).directory
    # held-out images of the trained and the enrolled classes in one ImageFolder: sorted folder order
    # (Acadian, Least, Magenta, Willow, Yellow) is not the bundle's label order, so labels are matched by name
    mixed = write_image_folder(root / "mixed", per_class=6, seed=7)
    write_new(mixed, 8, 2)
    out["mixed"] = mixed
    return out


def new_class_video(path: Path, cls: int, n: int = 24, seed: int = 5) -> str:
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (96, 96))
    assert w.isOpened()
    for _ in range(n):
        w.write(new_image(rng, cls))
    w.release()
    return str(path)


def test_validate_scores_the_new_classes_by_name(enrolled, tmp_path):
    report = tmp_path / "v.json"
    r = run("validate", enrolled["intel-cpu"], "--data", enrolled["mixed"], "--json", report)
    assert r.exit_code == 0, r.output
    v = json.loads(report.read_text())
    assert v["images"] == 3 * 6 + 2 * 8
    assert set(v["per_class"]) == set(CLASSES + NEW)  # per-class rows name the enrolled classes
    assert all(v["per_class"][n]["images"] == 8 for n in NEW)
    with LoadedBundle(enrolled["intel-cpu"]) as lb:
        assert lb.labels == CLASSES + NEW
        from edgefg.calibration.dataset import scan

        samples = scan(enrolled["mixed"], lb.labels).samples
        pred = lb.classify([cv2.imread(str(s.path)) for s in samples]).argmax(1)
    truth = np.asarray([s.label for s in samples])
    assert {lb.labels[s.label] for s in samples if s.path.parent.name in NEW} == set(NEW)  # by name, not by folder position
    top1 = float((pred == truth).mean())
    assert abs(v["top1"] - top1) < 1e-9  # validate scores what the bundle predicts, over the extended labels
    new_rows = np.isin(truth, [lb.labels.index(n) for n in NEW])
    assert (pred[new_rows] == truth[new_rows]).mean() > 0.5
    assert np.mean([v["per_class"][n]["accuracy"] for n in NEW]) == pytest.approx((pred[new_rows] == truth[new_rows]).mean())


def test_smoothing_and_open_set_keep_a_new_class(enrolled, tmp_path):
    """A clip of a new class: decided as that class after smoothing, not 'unknown', at a min-confidence that
    the trained classes' own images pass through the original bundle."""
    video = new_class_video(tmp_path / "magenta.mkv", 0)
    with LoadedBundle(enrolled["src-intel-cpu"]) as lb:
        from edgefg.calibration.dataset import scan
        from edgefg.runtime.engine.postprocess import to_probabilities

        old = [s for s in scan(enrolled["mixed"]).samples if s.path.parent.name in CLASSES]
        conf = to_probabilities(lb.classify([cv2.imread(str(s.path)) for s in old]), lb.manifest.output_activation).max(1)
    threshold = float(np.median(conf))  # half of the trained classes' images pass it
    results = list(stream(enrolled["intel-cpu"], video, RunOptions(smooth="ema:0.5", min_confidence=threshold)))
    decided = [r["label"] for r in results]
    assert len(decided) == 24
    assert decided[-12:].count(NEW[0]) >= 10, (threshold, decided)  # settled on the new class
    assert decided.count("unknown") <= 6, (threshold, decided)
    events = list(stream(enrolled["intel-cpu"], video, RunOptions(smooth="majority:3", events=True, min_confidence=threshold)))
    assert events and events[-1]["label"] == NEW[0]


def test_live_page_shows_enrolled_labels(enrolled):
    import threading
    import urllib.request

    from edgefg.runtime.capture.cameras import CameraConfig
    from edgefg.runtime.loop.multicam import MultiPipeline
    from edgefg.runtime.serve import serve
    from tests.runtime.fakes import FakeSource

    frame = new_image(np.random.default_rng(9), 0)
    events: list[dict] = []
    ready = {}

    def on_event(e):
        events.append(e)
        if e["event"] == "http_listening":
            ready["url"] = "http://" + e["address"]

    model = LoadedBundle(enrolled["intel-cpu"])
    opts = RunOptions(http="127.0.0.1:0", smooth="ema:0.5", on_event=on_event, output=Path(os.devnull))
    pipe = MultiPipeline(model, [CameraConfig("shelf", "x")], opts, sources={"shelf": FakeSource(n=10**6, live=True, interval=0.05, spec="shelf", image=frame)})
    thread = threading.Thread(target=lambda: serve(pipe, opts, handle_signals=False), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        state = {}
        while time.monotonic() < deadline:
            if "url" in ready:
                state = json.loads(urllib.request.urlopen(ready["url"] + "/api/state", timeout=5).read())
                latest = state["cameras"]["shelf"]["latest"]
                if latest and latest.get("label") == NEW[0] and state["sightings"]:
                    break
            time.sleep(0.2)
        assert state["cameras"]["shelf"]["latest"]["label"] == NEW[0], state
        assert state["sightings"][0]["label"] == NEW[0]
    finally:
        pipe.stop()
        thread.join(10)
        model.close()


def test_mqtt_and_home_assistant_publish_the_enrolled_label(enrolled, tmp_path):
    from tests.runtime.test_mqtt import Mosquitto, Subscriber, paho, wait_for

    if paho is None:
        pytest.skip("paho-mqtt (pip install 'edgefg[mqtt]')")
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        video = new_class_video(tmp_path / "magenta.mkv", 0, n=40)
        sub = Subscriber(broker.port, "#", client_id="enrolled")
        proc = subprocess.run([*EDGEFG, "run", str(enrolled["intel-cpu"]), "--source", f"shelf={video}", "--smooth", "majority:3",
                               "--mqtt", broker.url, "--mqtt-prefix", "shop/edgefg", "--mqtt-spool", str(tmp_path / "s.sqlite"),
                               "--output", str(tmp_path / "out.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        wait_for(lambda: any(t == "shop/edgefg/shelf/events" for t, _, _ in sub.messages), what="a sighting event")
        msgs = list(sub.messages)
        sub.close()
    finally:
        broker.kill()
    states = [json.loads(p) for t, p, _ in msgs if t == "shop/edgefg/shelf/state"]
    assert states and states[-1]["label"] == NEW[0], states[-1:]
    events = [json.loads(p) for t, p, _ in msgs if t == "shop/edgefg/shelf/events"]
    assert NEW[0] in {e["after"]["label"] for e in events if e.get("after")}
    disc = [json.loads(p) for t, p, _ in msgs if t.endswith("/species/config")]
    assert disc and disc[0]["state_topic"] == "shop/edgefg/shelf/state"  # Home Assistant's sensor reads that label


def test_compare_two_enrolled_bundles(enrolled, tmp_path):
    report = tmp_path / "c.json"
    r = run("compare", enrolled["intel-cpu"], enrolled["onnxruntime-cpu"], "--data", enrolled["mixed"], "--min-agreement", "0.9", "--json", report)
    assert r.exit_code == 0, r.output
    c = json.loads(report.read_text())
    assert c["images"] == 3 * 6 + 2 * 8
    # an enrolled bundle against its input: different label lists, a one-line error (exit 2)
    r = run("compare", enrolled["intel-cpu"], enrolled["src-intel-cpu"], "--data", enrolled["mixed"])
    assert r.exit_code == 2 and sum(line.startswith("error:") for line in r.output.splitlines()) == 1, r.output
