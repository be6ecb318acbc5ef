"""A loopback MJPEG stream as the source (killed and restored) and the /healthz, /latest, /metrics endpoint."""
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime import RunOptions
from edgefg.runtime.outputs.httpd import HealthServer, parse_address, prometheus_text
from edgefg.runtime.serve import run_pipeline
from tests.runtime.fakes import MjpegServer


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_parse_address():
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("8081") == ("127.0.0.1", 8081)
    with pytest.raises(EdgefgError, match="--http"):
        parse_address("localhost:http")


def test_mjpeg_stream_killed_and_restored_with_http_endpoint(tiny_bundles):
    bundle = tiny_bundles["fp32-onnxruntime-cpu"]
    cam = MjpegServer(fps=60)
    port = cam.port
    events, addr = [], {}

    def on_event(e):
        events.append(e)
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]

    opts = RunOptions(max_frames=60, http="127.0.0.1:0", stall_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2, on_event=on_event,
                      output=None, events=True)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("summary", run_pipeline(bundle, cam.url, opts, handle_signals=False)), daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "url" not in addr:
        time.sleep(0.05)
    base = addr["url"]
    while time.monotonic() < deadline and get(base + "/latest")[0] != 200:
        time.sleep(0.05)
    code, body = get(base + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    latest = json.loads(get(base + "/latest")[1])
    assert latest["top"] and latest["source"] == cam.url
    code, metrics = get(base + "/metrics")
    assert code == 200 and "# TYPE edgefg_frames_total counter" in metrics
    assert 'edgefg_stage_latency_seconds_bucket{camera="default",stage="infer",le="+Inf"}' in metrics
    assert 'edgefg_frame_age_seconds{camera="default"}' in metrics
    assert get(base + "/nope")[0] == 404
    # kill the camera, bring it back on the same port
    cam.stop()
    time.sleep(0.5)
    cam = MjpegServer(fps=60, port=port)
    t.join(30)
    cam.stop()
    assert not t.is_alive(), [e["event"] for e in events]
    s = box["summary"]
    assert s["frames"] == 60 and s["reconnects"] >= 1
    kinds = [e["event"] for e in events]
    assert "source_lost" in kinds or "source_ended" in kinds or "source_stalled" in kinds
    assert "source_opened" in kinds


def test_healthz_reports_a_dead_source():
    now = time.time()
    snap = {"running": True, "started": now - 100, "frames": 10, "last_frame_time": now - 60, "latest": None, "info": {"bundle": "b"}}
    server = HealthServer("127.0.0.1:0", lambda: snap, stale_after_s=30).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = get(base + "/healthz")
        assert code == 503 and json.loads(body)["status"] == "unhealthy"
        assert get(base + "/latest")[0] == 204
        snap["last_frame_time"] = time.time()
        assert get(base + "/healthz")[0] == 200
        snap["running"] = False
        assert get(base + "/healthz")[0] == 503
    finally:
        server.close()


def test_prometheus_text_format():
    text = prometheus_text({"running": True, "frames": 5, "dropped": 2, "info": {"bundle": 'a"b', "backend": "openvino"},
                            "stages_recent": {"infer": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "mean": 1.2}}})
    lines = text.strip().splitlines()
    samples = [ln for ln in lines if not ln.startswith("#")]
    for ln in samples:
        name_labels, value = ln.rsplit(" ", 1)
        float(value)
        assert name_labels.startswith("edgefg_")
    assert 'edgefg_info{bundle="a\\"b",backend="openvino"} 1' in lines
    assert 'edgefg_dropped_frames_total{camera="default"} 2' in lines
