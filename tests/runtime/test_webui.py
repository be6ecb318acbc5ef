"""The HTTP side of the field-camera service: hardening (token, per-connection timeout, connection cap,
warning on an open bind, one-line start-up errors), the live page's JSON/MJPEG, and a real headless
Chromium loading the page."""
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime import RunOptions
from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.loop.multicam import MultiPipeline
from edgefg.runtime.outputs.httpd import HEALTH_RESERVE, HealthServer, host_allowed, read_token
from edgefg.runtime.serve import serve
from tests.conftest import EDGEFG
from tests.runtime.fakes import FakeSource, write_video
from tests.runtime.real_parts import chromium_paths, require

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-0123456789"
SCREENSHOT = REPO / "docs" / "live-page.png"  # written when EDGEFG_WRITE_SCREENSHOT=1 (the README shows it)


def get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def snap():
    now = time.time()
    return {"running": True, "started": now, "frames": 1, "last_frame_time": now, "latest": {"label": "x"}, "info": {}}


def test_token_timeout_and_connection_cap():
    events = []
    timeout_s = 3.0  # long enough that a loaded 2-core CI machine accepts all the idle clients before any is dropped
    server = HealthServer("127.0.0.1:0", snap, token=TOKEN, max_connections=3, timeout_s=timeout_s, events=EventLog(listener=events.append)).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(base + "/latest")[0] == 401
        assert get(base + "/latest", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(base + "/latest", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(base + f"/metrics?token={TOKEN}")[0] == 200
        assert get(base + "/healthz")[0] == 200  # watchdogs need no token
        # the handler of the last request may still hold its slot for a moment after the answer: wait for
        # it, or the third idle client is the one refused and /healthz below gets that freed slot
        deadline = time.monotonic() + 5
        while server.stats()["open"] > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats()["open"] == 0, server.stats()
        # three half-open clients take every request slot: /healthz and /metrics are still answered on the
        # reserve, anything else is refused at once; with the reserve taken too, /healthz is refused as well
        opened = time.monotonic()

        def hold(n: int, total: int) -> list[socket.socket]:
            socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
            deadline = time.monotonic() + 5  # wait for the accept thread to take them (not a fixed sleep: CI is loaded)
            while server.stats()["open"] < total and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.stats()["open"] == total, server.stats()
            return socks

        idle = hold(3, 3)
        assert time.monotonic() - opened < timeout_s, "machine too loaded: the idle clients timed out before the check"
        assert get(base + "/healthz")[0] == 200  # the watchdog is never starved into restarting a healthy camera
        code, body = get(base + "/latest", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 503 and json.loads(body)["error"] == "busy"
        deadline = time.monotonic() + 5
        while server.stats()["open"] > 3 and time.monotonic() < deadline:  # the reserve handlers let go
            time.sleep(0.01)
        idle += hold(HEALTH_RESERVE, 3 + HEALTH_RESERVE)
        assert time.monotonic() - opened < timeout_s, "machine too loaded: the idle clients timed out before the check"
        t0 = time.monotonic()
        assert get(base + "/healthz")[0] == 503 and time.monotonic() - t0 < 1.0
        # ...and they are dropped after the per-connection timeout, freeing the slots
        for s in idle:
            s.settimeout(5)
            assert s.recv(100) == b"", "the server answered a request that was never sent"
            s.close()
        assert time.monotonic() - opened < timeout_s + 2.0, f"half-open connections were kept past the {timeout_s} s timeout"
        deadline = time.monotonic() + 5  # the handler threads release their slots just after closing
        while server.stats()["open"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert get(base + "/healthz")[0] == 200
        assert server.stats()["rejected"] >= 1
    finally:
        server.close()
    assert not [e for e in events if e["event"] == "http_insecure"]


class FakeLive:
    """A live state with one camera whose frames never stop (what the MJPEG stream reads)."""

    cameras = ["a"]

    def __init__(self) -> None:
        self.seq = 0

    def jpeg(self, camera, after_seq=0, timeout=5.0, quality=75):
        time.sleep(0.02)
        self.seq += 1
        return self.seq, b"\xff\xd8fake\xff\xd9"

    def sightings(self):
        return []


def test_streams_have_their_own_slots_and_never_starve_requests():
    server = HealthServer("127.0.0.1:0", snap, live=FakeLive(), max_connections=2, max_streams=2, stream_fps=20).start()
    try:
        viewers = []
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            c.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            assert c.recv(200).startswith(b"HTTP/1.0 200")
            viewers.append(c)
        deadline = time.monotonic() + 5
        while server.stats()["streams"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats()["streams"] == 2
        base = f"http://127.0.0.1:{server.port}"
        for _ in range(3):  # both request slots are free for the page, /latest and /metrics
            assert get(base + "/latest")[0] == 200 and get(base + "/metrics")[0] == 200
        code, body = get(base + "/stream.mjpg")
        assert code == 503 and json.loads(body)["error"] == "too many streams"
        for c in viewers:
            c.close()
    finally:
        server.close()


def test_a_tokenless_server_refuses_foreign_host_names_and_says_nosniff():
    server = HealthServer("127.0.0.1:0", snap).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = get(base + "/api/state", {"Host": "attacker.example:8080"})  # a page re-bound to 127.0.0.1
        assert code == 403 and "Host" in json.loads(body)["error"]
        assert get(base + "/latest", {"Host": "localhost:1234"})[0] == 200
        assert get(base + "/healthz", {"Host": "attacker.example"})[0] == 200  # watchdogs: health only
        with urllib.request.urlopen(base + "/latest", timeout=5) as r:
            assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
    finally:
        server.close()
    tok = HealthServer("127.0.0.1:0", snap, token=TOKEN).start()  # with a token the token is the check
    try:
        assert get(f"http://127.0.0.1:{tok.port}/latest", {"Host": "cam.example", "Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        tok.close()
    assert host_allowed("[::1]:80", "0.0.0.0") and host_allowed("10.1.2.3", "0.0.0.0") and host_allowed(None, "0.0.0.0")
    assert not host_allowed("evil.example", "0.0.0.0") and host_allowed("cam.localhost", "0.0.0.0")


def test_health_per_camera():
    now = time.time()
    cams = {"a": {"last_frame_time": now, "frames": 5}, "b": {"last_frame_time": now - 100, "frames": 5}}
    snapshot = {"running": True, "started": now - 200, "frames": 10, "cameras": cams, "info": {}}
    server = HealthServer("127.0.0.1:0", lambda: snapshot, stale_after_s=30).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = get(base + "/healthz")
        body = json.loads(body)
        assert code == 200 and body["status"] == "degraded" and body["cameras"]["b"]["ok"] is False and body["cameras"]["a"]["ok"]
        cams["a"]["last_frame_time"] = now - 100
        assert get(base + "/healthz")[0] == 503
        cams["a"]["last_frame_time"] = cams["b"]["last_frame_time"] = time.time()
        assert json.loads(get(base + "/healthz")[1])["status"] == "ok"
    finally:
        server.close()


def test_health_is_degraded_while_mqtt_cannot_publish():
    now = time.time()
    snapshot = {"running": True, "started": now, "frames": 1, "last_frame_time": now, "latest": {}, "info": {}}
    mqtt = {"connected": True, "healthy": True, "spool_ok": True}
    server = HealthServer("127.0.0.1:0", lambda: snapshot, extra=lambda: {"mqtt": dict(mqtt)}).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert json.loads(get(base + "/healthz")[1])["status"] == "ok"
        for key in ("healthy", "spool_ok"):  # a dead client thread; a spool whose disk fails
            mqtt[key] = False
            code, body = get(base + "/healthz")
            assert code == 200 and json.loads(body)["status"] == "degraded" and json.loads(body)["mqtt"][key] is False
            mqtt[key] = True
        mqtt["connected"] = False  # a broker that is down: the spool holds the events, the camera is healthy
        assert json.loads(get(base + "/healthz")[1])["status"] == "ok"
    finally:
        server.close()


def test_a_clock_step_cannot_hide_a_stalled_camera():
    now = time.time()
    # the wall clock says the last frame is fresh (someone stepped the clock back), the loop's monotonic age says 100 s
    cams = {"a": {"last_frame_time": now, "last_frame_age_s": 100.0, "frames": 5}}
    snapshot = {"running": True, "started": now, "running_s": 500.0, "frames": 5, "cameras": cams, "info": {}}
    server = HealthServer("127.0.0.1:0", lambda: snapshot, stale_after_s=30).start()
    try:
        code, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert code == 503 and json.loads(body)["cameras"]["a"]["last_frame_age_s"] == 100.0 and json.loads(body)["uptime_s"] == 500.0
        cams["a"]["last_frame_age_s"] = 0.5
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
    finally:
        server.close()


def test_open_bind_without_token_warns_and_bad_tokens(tmp_path):
    events = []
    server = HealthServer("0.0.0.0:0", snap, events=EventLog(listener=events.append))
    server.close()
    assert [e for e in events if e["event"] == "http_insecure"]
    f = tmp_path / "token"
    f.write_text("short\n")
    with pytest.raises(EdgefgError, match="shorter than 16"):
        read_token(f)
    f.write_text("")
    with pytest.raises(EdgefgError, match="empty"):
        read_token(f)
    f.write_text(TOKEN + "\n")
    assert read_token(f) == TOKEN
    with pytest.raises(EdgefgError, match="does not exist"):
        read_token(tmp_path / "missing")
    with pytest.raises(EdgefgError, match="--http-max-connections"):
        HealthServer("127.0.0.1:0", snap, max_connections=0)
    with pytest.raises(EdgefgError, match="--http-timeout"):
        HealthServer("127.0.0.1:0", snap, timeout_s=0)


def test_port_in_use_is_a_one_line_error(tiny_bundles, tmp_path):
    video = write_video(tmp_path / "clip.mkv", n=5)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        p = subprocess.run([*EDGEFG, "run", str(tiny_bundles["fp32-intel-cpu"]), "--source", video, "--http", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        holder.close()
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[0] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use", p.stderr


class LiveRun:
    """Two fake live cameras through ``serve`` (the code `edgefg run` uses) with --http, on a thread."""

    def __init__(self, bundle, token_file=None):
        self.model = LoadedBundle(bundle)
        self.events = []
        cams = [CameraConfig("feeder", "x"), CameraConfig("pond", "y")]
        srcs = {"feeder": FakeSource(n=10**6, live=True, interval=0.05, spec="feeder"), "pond": FakeSource(n=10**6, live=True, interval=0.08, spec="pond")}
        self.opts = RunOptions(http="127.0.0.1:0", http_token_file=token_file, smooth="ema:0.5", on_event=self._event, output=Path(os.devnull))
        self.pipe = MultiPipeline(self.model, cams, self.opts, sources=srcs)
        self.url = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(20)

    def _event(self, e):
        self.events.append(e)
        if e["event"] == "http_listening":
            self.url = "http://" + e["address"]
            self._ready.set()

    def _run(self):
        self.summary = serve(self.pipe, self.opts, handle_signals=False)

    def close(self):
        self.pipe.stop()
        self.thread.join(10)
        self.model.close()


def mjpeg_frames(url, n, timeout=10):
    """Read ``n`` JPEG parts from a multipart stream."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        frames, buf = [], b""
        while len(frames) < n:
            buf += r.read1(65536)
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0].split(b":")[1])
                if len(rest) < length:
                    break
                frames.append(rest[:length])
                buf = rest[length + 2:]
    return frames


def test_live_page_api_and_streams(tiny_bundles):
    run = LiveRun(tiny_bundles["fp32-intel-cpu"])
    try:
        base = run.url
        code, page = get(base + "/")
        assert code == 200 and b"<script>" in page and b"http://" not in page and b"https://" not in page  # self-contained: no CDN
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = json.loads(get(base + "/api/state")[1])
            if all(c["latest"] for c in state["cameras"].values()) and state["sightings"]:
                break
            time.sleep(0.2)
        assert set(state["cameras"]) == {"feeder", "pond"} and state["health"]["status"] == "ok"
        assert state["sightings"][0]["camera"] in ("feeder", "pond")
        frames = mjpeg_frames(base + "/stream.mjpg?camera=pond", 3)
        assert all(f.startswith(b"\xff\xd8") for f in frames) and len(set(frames)) == 3  # new frames, not one repeated
        assert get(base + "/stream.mjpg?camera=nope")[0] == 404
        assert json.loads(get(base + "/latest?camera=feeder")[1])["camera"] == "feeder"
        metrics = get(base + "/metrics")[1].decode()
        for name in ('edgefg_frames_total{camera="pond"}', 'edgefg_frame_age_seconds{camera="feeder"}', "# TYPE edgefg_stage_latency_seconds histogram",
                     'edgefg_stage_latency_seconds_count{camera="pond",stage="infer"}', "edgefg_inference_batches_total", "edgefg_http_open_connections"):
            assert name in metrics, name
    finally:
        run.close()


def test_headless_chromium_sees_labels_and_a_changing_stream(tiny_bundles, tmp_path):
    browser, driver_path = chromium_paths()
    require(browser is not None and driver_path is not None, "Debian's chromium and chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        require(False, "selenium (pip install -e '.[dev]')")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    run = LiveRun(tiny_bundles["fp32-intel-cpu"], token_file=token_file)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1000,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get(f"{run.url}/?token={TOKEN}")
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        wait.until(lambda d: len(d.find_elements("css selector", ".card")) == 2)
        labels = wait.until(lambda d: [e.text for e in d.find_elements("css selector", ".card .label")
                                       if e.text and e.text not in ("…", "waiting for frames")] or None)
        known = LoadedBundle(tiny_bundles["fp32-intel-cpu"]).labels + ["unknown"]
        assert any(t.rsplit(" ", 1)[0] in known for t in labels), labels
        wait.until(lambda d: d.execute_script("return [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"))
        pixels = """const i = document.querySelector('.card[data-camera="feeder"] img'); const c = document.createElement('canvas');
                    c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0);
                    return Array.from(x.getImageData(0, 0, c.width, c.height).data.filter((_, k) => k % 97 === 0)).join(',');"""
        first = driver.execute_script(pixels)
        wait.until(lambda d: d.execute_script(pixels) != first)  # the stream image changes in the browser
        wait.until(lambda d: "none yet" not in d.find_element("id", "sightings").text)
        shot = SCREENSHOT if os.environ.get("EDGEFG_WRITE_SCREENSHOT") == "1" else tmp_path / "live-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        driver.set_window_size(390, 844)  # a phone: no sideways scrolling
        time.sleep(0.3)
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        driver.quit()
        run.close()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_unwritable_output_is_a_one_line_error(tiny_bundles, tmp_path):
    video = write_video(tmp_path / "clip.mkv", n=5)
    p = subprocess.run([*EDGEFG, "run", str(tiny_bundles["fp32-intel-cpu"]), "--source", video, "--output", "/proc/edgefg-nope/out.jsonl"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[0].startswith("error: cannot write --output '/proc/edgefg-nope/out.jsonl'"), p.stderr
