"""The disk under the runtime (issue #26, class 2), with real parts: a real mosquitto broker, a real
small tmpfs (mounted when this runs as root and may mount; CI does) or a real file-size limit
(RLIMIT_FSIZE with SIGXFSZ ignored: every write past it fails with EFBIG, as on a full card), and spool
files damaged on disk by the test. A full or failing disk drops events and counts them (stats, metric,
event) while inference goes on, and publishing resumes when space returns; a damaged spool is set aside
(kept) and recreated with a warning."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.spool import Spool
from tests.conftest import EDGEFG
from tests.runtime.fakes import write_video
from tests.runtime.real_parts import IN_CI, Mosquitto, require
from tests.runtime.test_mqtt import REPO, Subscriber, dedup, wait_for

try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover
    paho = None


@pytest.fixture
def broker(tmp_path):
    require(paho is not None, "paho-mqtt (pip install 'edgefg[mqtt]')")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.kill()


class SmallDisk:
    """A real tmpfs of ``size`` bytes: ``fill()`` takes every free byte with a filler file, ``free()`` gives it back."""

    def __init__(self, root: Path, size: int) -> None:
        self.path = root
        self.path.mkdir(parents=True, exist_ok=True)
        self.filler = self.path / "filler"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(self.path)], capture_output=True, text=True) \
            if os.geteuid() == 0 and shutil.which("mount") else None
        self.mounted = r is not None and r.returncode == 0
        self.why = "not root" if r is None else r.stderr.strip()

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as fh:
            for chunk in (65536, 4096, 512, 1):
                try:
                    while True:
                        fh.write(b"\0" * chunk)
                except OSError:
                    pass

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "small", 2 * 1024 * 1024)
    if not disk.mounted:
        if IN_CI:  # CI runs as root: the real full disk must be tested there
            pytest.fail(f"cannot mount a tmpfs in CI ({disk.why})")
        pytest.skip(f"cannot mount a tmpfs here ({disk.why}); test_spool_past_a_file_size_limit covers the same without root")
    yield disk
    disk.unmount()


# -- a damaged spool --------------------------------------------------------------------------------
def write_spool(path: Path, n: int = 2000) -> int:
    sp = Spool(path)
    seqs = sp.put_many([("edgefg/cam/events", os.urandom(200)) for _ in range(n)])
    sp.close()
    return seqs[-1]


def damage_page(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(4096 * 5)  # a page in the middle of the table: what a power cut on an SD card leaves
        fh.write(b"\xde\xad\xbe\xef" * 1024)


def damage_header(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"not sqlite at all, sorry")  # "file is not a database"


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 3)


@pytest.mark.parametrize("damage", [damage_page, damage_header, truncate], ids=["page", "header", "truncated"])
def test_a_damaged_spool_is_set_aside_and_recreated(tmp_path, damage):
    path = tmp_path / "spool.sqlite"
    last_seq = write_spool(path)
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert not side.exists()  # closed cleanly: everything is in the main file
    damage(path)
    damaged_bytes = path.read_bytes()
    seen: list[dict] = []
    sp = Spool(path, events=EventLog(listener=seen.append))  # before: a traceback at start, the camera never came up
    (ev,) = [e for e in seen if e["event"] == "mqtt_spool_damaged"]
    kept = Path(ev["kept_as"])
    assert kept.parent == path.parent and kept.name.startswith("spool.sqlite.damaged-") and kept.read_bytes() == damaged_bytes  # kept as it was
    assert any(w in ev["error"] for w in ("malformed", "not a database", "quick_check")), ev
    assert sp.depth == 0 and sp.stats()["spool_damaged"] == 1 and sp.ok
    seq = sp.put("edgefg/cam/events", b'{"n":1}')
    assert seq is not None and seq > last_seq  # seqs go on above the old ones: consumers deduplicate by seq
    assert sp.peek(5) == [(seq, "edgefg/cam/events", b'{"n":1}', False)]
    sp.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    seen.clear()
    again = Spool(path, events=EventLog(listener=seen.append))  # the new one is whole: no second setting aside
    assert again.depth == 1 and not seen and len(list(path.parent.glob("spool.sqlite.damaged-*"))) >= 1
    again.close()


def test_edgefg_run_comes_up_on_a_damaged_spool(broker, tiny_bundles, tmp_path):
    """`edgefg run --mqtt` on a spool with a damaged page: it starts, warns, publishes."""
    spool = tmp_path / "run.sqlite"
    write_spool(spool)
    damage_page(spool)
    video = write_video(tmp_path / "clip.mkv", n=20)
    sub = Subscriber(broker.port, "edgefg/#", client_id="damaged-sub")
    r = subprocess.run([*EDGEFG, "run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", video, "--smooth", "none", "--mqtt", broker.url,
                        "--mqtt-spool", str(spool), "--output", str(tmp_path / "out.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=120)
    sub_events = lambda: [e for t, p, _ in list(sub.messages) if t.endswith("/events") for e in [json.loads(p)]]  # noqa: E731
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
        damaged = [e for e in events if e["event"] == "mqtt_spool_damaged"]
        assert len(damaged) == 1 and Path(damaged[0]["kept_as"]).exists()
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 20  # every frame classified
        wait_for(lambda: sub_events(), what="events published from the new spool")
    finally:
        sub.close()


# -- a full disk ------------------------------------------------------------------------------------
PUBLISHER = r'''
import json, resource, signal, sys, time
from pathlib import Path
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

url, spool, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing the process
seen = []
pub = MqttPublisher(MqttOptions(url, spool_path=spool, node_id="disk", drain_s=10), ["cam"], EventLog(listener=seen.append)).start()
kept = []

def say(tag, **kw):
    print(json.dumps({"tag": tag, "stats": pub.stats(), "events": [e["event"] for e in seen], "kept": kept, **kw}), flush=True)

def wait_line(expected):
    line = sys.stdin.readline().strip()
    assert line == expected, line

def produce(lo, hi):
    t0 = time.monotonic()
    for i in range(lo, hi):
        if pub.event("cam", {"n": i}) is not None:
            kept.append(i)
    return time.monotonic() - t0

produce(0, 5)
say("spooled")
if mode == "fsize":  # no file may grow any more: the disk is full
    size = max(p.stat().st_size for p in spool.parent.glob(spool.name + "*"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
else:
    wait_line("filled")
took = produce(5, 105)
say("full", took=took)
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
else:
    wait_line("freed")
time.sleep(1.3)  # past the spool's first back-off (1 s)
produce(105, 110)
say("resumed")
wait_line("broker")
deadline = time.monotonic() + 15
while not pub.connected and time.monotonic() < deadline:
    time.sleep(0.05)
pub.close()
say("closed")
'''


def full_disk_scenario(broker, spool: Path, mode: str, disk: SmallDisk | None = None) -> None:
    """Broker down; 5 events spooled; the disk fills; 100 events; space returns; 5 more; the broker
    comes back: what was spooled arrives, what the full disk dropped is counted, nothing crashed."""
    broker.kill()
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, broker.url, str(spool), mode], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sub = None
    try:
        def step(line: str | None = None) -> dict:
            if line:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            out = proc.stdout.readline()
            assert out, proc.stderr.read()[-3000:]
            return json.loads(out)

        spooled = step()
        assert spooled["stats"]["spool_ok"] and spooled["stats"]["spool_depth"] == 5 and spooled["kept"] == [0, 1, 2, 3, 4]
        if disk is not None:
            disk.fill()
        full = step("filled" if disk is not None else None)
        st = full["stats"]
        middle = [i for i in full["kept"] if 5 <= i < 105]
        assert len(middle) <= 2, middle  # the disk is full: (nearly) nothing goes in
        assert st["spool_dropped_disk"] == 100 - len(middle) and st["spool_dropped"] == 100 - len(middle), st
        assert st["spool_ok"] is False and st["spool_errors"] >= 1 and ("disk" in st["spool_last_error"] or "full" in st["spool_last_error"]), st
        assert full["events"].count("mqtt_spool_error") == 1  # one warning, every drop counted
        assert full["took"] < 1.0  # no stall: the spool leaves a failing disk alone for a moment
        if disk is not None:
            disk.free()
        resumed = step("freed" if disk is not None else None)
        assert resumed["stats"]["spool_ok"] is True and "mqtt_spool_recovered" in resumed["events"]
        assert resumed["kept"][-5:] == [105, 106, 107, 108, 109]
        broker.start()
        sub = Subscriber(broker.port, "edgefg/#", client_id=f"disk-{mode}")
        closed = step("broker")
        assert proc.wait(30) == 0
        kept = resumed["kept"]
        assert closed["stats"]["left_in_spool"] == 0 and closed["stats"]["published"] == len(kept), closed["stats"]
        wait_for(lambda: len(dedup(sub.events())[0]) >= len(kept), what="the spooled events at the subscriber")
        assert [e["n"] for e in dedup(sub.events())[0]] == kept  # in order; the dropped ones are the counted ones
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if sub is not None:
            sub.close()


def test_spool_on_a_full_tmpfs_drops_counts_and_resumes(broker, small_disk):
    full_disk_scenario(broker, small_disk.path / "spool.sqlite", "tmpfs", small_disk)


def test_spool_past_a_file_size_limit_drops_counts_and_resumes(broker, tmp_path):
    full_disk_scenario(broker, tmp_path / "spool.sqlite", "fsize")


def test_spool_on_a_disk_full_at_start(small_disk):
    """The card is already full when the camera boots: the spool starts without a file, drops and counts,
    and opens once space returns."""
    small_disk.fill()
    seen: list[dict] = []
    sp = Spool(small_disk.path / "spool.sqlite", events=EventLog(listener=seen.append))
    assert sp.put("t", b"x") is None and sp.stats()["spool_dropped_disk"] == 1 and not sp.ok
    assert [e["event"] for e in seen] == ["mqtt_spool_error"]
    small_disk.free()
    time.sleep(1.2)
    assert sp.put("t", b"y") is not None and sp.ok and sp.depth == 1 and sp.dropped == 1
    assert [e["event"] for e in seen] == ["mqtt_spool_error", "mqtt_spool_recovered"]
    sp.close()


def test_edgefg_run_goes_on_with_a_full_spool_disk(broker, tiny_bundles, image_folder, tmp_path):
    """`edgefg run --mqtt` with the broker down and no file allowed to grow (the disk full from the start):
    it classifies on, warns once, counts the dropped events in its stats; space returns (the limit of
    the running process lifted) and the broker comes back: events are published; SIGTERM → exit 0."""
    broker.kill()
    spool = tmp_path / "spool" / "run.sqlite"
    spool.parent.mkdir()

    def full_disk() -> None:  # in the child, before exec: the ignored SIGXFSZ and the limit are inherited
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    proc = subprocess.Popen([*EDGEFG, "run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", f"north={image_folder}", "--loop", "--smooth", "none",
                             "--min-confidence", "0.454",  # the tiny model: class 1's images above, the rest below ('unknown'): a sighting per pass
                             "--mqtt", broker.url, "--mqtt-spool", str(spool), "--stats-every", "0.3", "--mqtt-drain", "5"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=full_disk)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    events = lambda: [json.loads(ln) for ln in list(lines) if ln.startswith("{")]  # noqa: E731
    stats = lambda: [e for e in events() if e["event"] == "stats" and "mqtt" in e]  # noqa: E731
    sub = None
    try:
        wait_for(lambda: any(e["event"] == "mqtt_spool_error" for e in events()), timeout=60, what="the spool error event")
        wait_for(lambda: stats() and stats()[-1]["mqtt"]["spool_dropped_disk"] >= 2, timeout=30, what="events dropped and counted")
        frames_then = stats()[-1]["frames"]
        wait_for(lambda: stats()[-1]["frames"] > frames_then + 20, timeout=30, what="inference going on")
        assert proc.poll() is None
        st = stats()[-1]["mqtt"]
        assert st["spool_ok"] is False and st["spool_dropped"] == st["spool_dropped_disk"] and st["healthy"] is True
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space returns
        wait_for(lambda: stats()[-1]["mqtt"]["spool_ok"] and stats()[-1]["mqtt"]["spool_depth"] > 0, timeout=45, what="the spool working again")
        assert any(e["event"] == "mqtt_spool_recovered" for e in events())
        dropped = stats()[-1]["mqtt"]["spool_dropped_disk"]
        broker.start()
        sub = Subscriber(broker.port, "edgefg/#", client_id="run-disk")
        wait_for(lambda: sub.events(), timeout=30, what="events published once the broker is back")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        reader.join(5)
        assert "Traceback" not in "".join(lines)
        assert sum(e["event"] == "mqtt_spool_error" for e in events()) == 1 and dropped >= 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if sub is not None:
            sub.close()


# -- collect's writer on a full disk -------------------------------------------------------------------
COLLECT = r'''
import json, resource, signal, sys, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from edgefg.runtime.outputs.collect import CollectOptions, Collector
from edgefg.runtime.loop.events import EventLog

root, mode = Path(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
seen = []
labels = ["a", "b", "c", "d", "e", "f"]
ctx = SimpleNamespace(events=EventLog(listener=seen.append), cameras=["cam"], rois={},
                      model=SimpleNamespace(labels=labels, manifest=None), crop=lambda cam, image: image)
col = Collector(ctx, CollectOptions(root, policies=("random",), random_rate=1.0, per_hour=0, seed=0))
rng = np.random.default_rng(0)
probs = np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
n = [0]

def feed(k):
    t0 = time.monotonic()
    for _ in range(k):
        n[0] += 1
        col.on_result("cam", {"frame": n[0], "timestamp": float(n[0]), "source": "x", "label": "a", "score": 0.5},
                      SimpleNamespace(image=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), probabilities=probs))
        time.sleep(0.01)
    assert col.flush(20)
    return time.monotonic() - t0

def say(tag, **kw):
    print(json.dumps({"tag": tag, "stats": col.stats()["summary"], "errors": col.errors,
                      "metrics": {m[0]: m[3] for m in col.metrics()}, "events": [e["event"] for e in seen], **kw}), flush=True)

feed(3)
say("ok")
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
else:
    assert sys.stdin.readline().strip() == "filled"
took = feed(10)
say("full", took=took, alive=col._thread.is_alive())
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
else:
    assert sys.stdin.readline().strip() == "freed"
feed(3)
say("resumed", summary=col.close())
'''


@pytest.mark.parametrize("mode", ["fsize", "tmpfs"])
def test_collect_writer_on_a_full_disk_counts_and_resumes(mode, tmp_path, request):
    disk = request.getfixturevalue("small_disk") if mode == "tmpfs" else None
    root = (disk.path if disk else tmp_path) / "collected"
    proc = subprocess.Popen([sys.executable, "-c", COLLECT, str(root), mode], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def step(line: str | None = None) -> dict:
            if line:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            out = proc.stdout.readline()
            assert out, proc.stderr.read()[-3000:]
            return json.loads(out)

        ok = step()
        assert ok["stats"]["kept"] == 3 and ok["errors"] == 0
        if disk:
            disk.fill()
        full = step("filled" if disk else None)
        assert full["alive"] and full["stats"]["kept"] == 3 and full["errors"] == 10, full  # every frame a counted error
        dropped = {tuple(sorted(lab.items())): v for lab, v in full["metrics"]["collect_dropped_frames_total"]}
        assert dropped[(("camera", "cam"), ("reason", "error"))] == 10 and full["metrics"]["collect_errors_total"] == [[{}, 10]]
        assert full["events"].count("collect_error") == 1 and full["took"] < 5
        if disk:
            disk.free()
        resumed = step("freed" if disk else None)
        assert resumed["stats"]["kept"] == 6 and resumed["summary"]["dropped"]["error"] == 10  # writing resumed by itself
        assert proc.wait(30) == 0 and "Traceback" not in proc.stderr.read()
        assert not list(root.rglob(".*.tmp"))  # no half-written temporary file left behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
