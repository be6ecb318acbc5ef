"""Per-sighting snapshots (the best frame, as Frigate keeps one per detection), per-class counts, and the
Home Assistant entities beside the species sensor: confidence, last seen, sightings, the snapshot image —
on the page's JSON, over HTTP and on a real MQTT broker."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.live import LiveOutputs, iso_utc
from edgefg.runtime.outputs.sighting_snapshots import SightingSnapshots
from tests.runtime.test_mqtt import Subscriber, broker, wait_for  # noqa: F401  (broker: the real mosquitto fixture)

BLUE, GREEN, RED = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # BGR


def frame(color: tuple[int, int, int], h: int = 120, w: int = 160) -> SimpleNamespace:
    return SimpleNamespace(image=np.full((h, w, 3), color, np.uint8))


def corner_color(jpeg: bytes) -> tuple[int, ...]:
    """The colour of the bottom-right corner (away from the label drawn at the top) of a JPEG."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return tuple(int(round(v / 255)) * 255 for v in img[-10:, -10:].reshape(-1, 3).mean(0))


def feed(live: LiveOutputs, seq: list[tuple[str, float, tuple[int, int, int]]], camera: str = "cam") -> None:
    for label, score, color in seq:
        live.on_result(camera, {"label": label, "score": score, "top": []}, frame(color))


def test_the_best_frame_of_each_sighting_is_kept_encoded_only_at_events():
    snaps = SightingSnapshots(keep=2, max_side=64)
    snaps.offer("cam", "s1", 0.6, frame(BLUE).image, {"label": "robin", "score": 0.6})
    sid, first = snaps.take("cam")
    assert sid == "s1" and corner_color(first) == BLUE and snaps.take("cam") is None  # nothing newer: not encoded again
    snaps.offer("cam", "s1", 0.9, frame(GREEN).image, {"label": "robin", "score": 0.9})
    snaps.offer("cam", "s1", 0.7, frame(RED).image, {"label": "robin", "score": 0.7})  # lower: the green frame stays the best
    assert snaps.encoded == 1
    sid, best = snaps.close("cam")
    assert corner_color(best) == GREEN and snaps.jpeg("s1") == best and snaps.encoded == 2
    img = cv2.imdecode(np.frombuffer(best, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) == 64  # a large frame is scaled down to max_side
    for s in ("s2", "s3"):
        snaps.offer("cam", s, 0.8, frame(RED).image, {"label": "wren", "score": 0.8})
        snaps.close("cam")
    assert snaps.jpeg("s1") is None and snaps.has("s3")  # only the last `keep` sightings


def test_a_frame_opencv_cannot_encode_costs_its_snapshot_not_the_run():
    snaps = SightingSnapshots()
    snaps.offer("cam", "s1", 0.9, np.zeros((8, 8, 2), np.uint8), {"label": "robin", "score": 0.9})  # two channels: putText refuses
    assert snaps.take("cam") is None and snaps.failed == 1 and not snaps.has("s1")
    live = LiveOutputs(["cam"], EventLog(listener=lambda e: None))
    live.on_result("cam", {"label": "robin", "score": 0.9, "top": []}, SimpleNamespace(image=np.zeros((8, 8, 2), np.uint8)))
    assert [r["label"] for r in live.sightings()] == ["robin"] and "snapshot" not in live.sightings()[0]


def test_live_outputs_snapshot_counts_and_http(tmp_path):
    from edgefg.runtime.outputs.httpd import HealthServer

    live = LiveOutputs(["cam"], EventLog(listener=lambda e: None))
    feed(live, [("robin", 0.55, BLUE), ("robin", 0.95, GREEN), ("robin", 0.8, RED), ("unknown", 0.2, RED),
                ("wren", 0.7, RED), ("unknown", 0.1, BLUE), ("robin", 0.9, BLUE)])
    rows = live.sightings()  # newest first: robin (open), wren, robin
    assert [r["label"] for r in rows] == ["robin", "wren", "robin"] and all("snapshot" in r for r in rows)
    assert corner_color(live.sighting_jpeg(rows[2]["id"])) == GREEN  # the first robin's best frame, not its first
    assert corner_color(live.sighting_jpeg(rows[1]["id"])) == RED
    assert live.counts() == {"cam": {"total": 3, "by_class": {"robin": 2, "wren": 1}}}
    snap = {"running": True, "started": time.time(), "info": {}, "cameras": {}}
    server = HealthServer("127.0.0.1:0", lambda: snap, live=live).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + rows[1]["snapshot"], timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and corner_color(r.read()) == RED
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/snapshot.jpg?sighting=nope", timeout=10)
        assert e.value.code == 404 and "no snapshot of sighting 'nope'" in e.value.read().decode()
        with urllib.request.urlopen(base + "/api/state", timeout=10) as r:
            state = json.loads(r.read())
        assert state["counts"]["cam"]["by_class"] == {"robin": 2, "wren": 1} and state["sightings"][0]["snapshot"].startswith("/snapshot.jpg?sighting=")
    finally:
        server.close()


def test_home_assistant_entities_and_the_snapshot_on_a_real_broker(broker, tmp_path):  # noqa: F811
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

    pub = MqttPublisher(MqttOptions(broker.url, spool_path=tmp_path / "s.sqlite", node_id="n1"), ["cam"], EventLog()).start()
    try:
        wait_for(lambda: pub.connected, what="connection")
        live = LiveOutputs(["cam"], EventLog(listener=lambda e: None), mqtt=pub)
        t0 = time.time()
        feed(live, [("robin", 0.6, BLUE), ("robin", 0.97, GREEN), ("robin", 0.9, RED)])
        pub.state("cam", {"label": "robin", "score": 0.9, "top": [], "changed": True})  # what MqttOutput sends per frame
        live.close()  # ends the sighting: its best frame, last seen and counts go out
        late = Subscriber(broker.port, "#", client_id="ha")

        def latest() -> dict[str, bytes]:  # what Home Assistant holds: retained on subscribing, then what followed
            return {t: p for t, p, _ in list(late.messages) if p}

        want = {"edgefg/cam/snapshot", "edgefg/cam/last_seen", "edgefg/cam/counts", "edgefg/cam/state",
                *(f"homeassistant/sensor/n1_cam/{o}/config" for o in ("species", "confidence", "last_seen", "sightings")),
                "homeassistant/image/n1_cam/snapshot/config"}
        try:
            # the end event's snapshot may reach the broker after ``late`` subscribed: then it arrives live
            wait_for(lambda: want <= set(latest()) and json.loads(latest()["edgefg/cam/last_seen"])["best_score"] == 0.97
                     and corner_color(latest()["edgefg/cam/snapshot"]) == GREEN, what=f"snapshot, last seen, counts and discovery: have {sorted(latest())}")
            got = latest()
        finally:
            late.close()
        again = Subscriber(broker.port, "#", client_id="ha-restarted")  # Home Assistant restarted: all of it is retained
        try:
            wait_for(lambda: want <= {t for t, p, r in list(again.messages) if r and p}, what="the retained copies")
        finally:
            again.close()
    finally:
        pub.close(drain_s=0.5)
    assert corner_color(got["edgefg/cam/snapshot"]) == GREEN  # the sighting's best frame, raw JPEG bytes for HA's image entity
    seen = json.loads(got["edgefg/cam/last_seen"])
    assert seen["label"] == "robin" and seen["best_score"] == 0.97
    assert t0 - 1 <= datetime.fromisoformat(seen["time"]).timestamp() <= time.time() + 1
    assert json.loads(got["edgefg/cam/counts"]) == {"total": 1, "by_class": {"robin": 1}}
    image = json.loads(got["homeassistant/image/n1_cam/snapshot/config"])
    assert image["image_topic"] == "edgefg/cam/snapshot" and image["content_type"] == "image/jpeg"
    assert image["unique_id"] == "edgefg_n1_cam_snapshot" and image["device"]["identifiers"] == ["edgefg_n1_cam"]
    conf = json.loads(got["homeassistant/sensor/n1_cam/confidence/config"])
    assert conf["state_topic"] == "edgefg/cam/state" and conf["unit_of_measurement"] == "%"
    last = json.loads(got["homeassistant/sensor/n1_cam/last_seen/config"])
    assert last["device_class"] == "timestamp" and last["state_topic"] == "edgefg/cam/last_seen"
    assert json.loads(got["homeassistant/sensor/n1_cam/sightings/config"])["state_topic"] == "edgefg/cam/counts"


def test_iso_utc():
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250+00:00"
