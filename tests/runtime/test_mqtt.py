"""MQTT: the spool and sightings (unit), then a real mosquitto broker: thousands of events through the
in-flight window (every seq once, in order per camera, an empty spool after close), the broker frozen
with a full window in flight, killed and restarted mid-run, an edgefg restart with events still
spooled, and `edgefg run --mqtt` end to end (retained state, Home Assistant discovery, last will)."""
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime.loop.sightings import SightingTracker
from edgefg.runtime.outputs.spool import Spool
from tests.conftest import EDGEFG
from tests.runtime.fakes import write_video
from tests.runtime.real_parts import Mosquitto, require

REPO = Path(__file__).resolve().parents[2]

try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover
    paho = None


def test_spool_keeps_order_drops_oldest_and_survives_reopen(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_messages=5)
    seqs = [sp.put("t", f"m{i}".encode()) for i in range(8)]
    assert seqs == sorted(seqs) and sp.depth == 5 and sp.dropped == 3
    assert [p for _, _, p, _ in sp.peek(10)] == [f"m{i}".encode() for i in range(3, 8)]
    sp.ack(sp.peek(1)[0][0])
    sp.close()
    again = Spool(tmp_path / "s.sqlite", max_messages=5)
    assert again.depth == 4 and again.dropped == 3 and again.peek(1)[0][2] == b"m4"
    assert again.put("t", b"next") > seqs[-1]  # never reuses a seq
    with pytest.raises(EdgefgError, match="spool"):
        Spool(tmp_path / "s.sqlite" / "x.sqlite")  # a file where a folder should be


def test_spool_ack_many_and_put_many_bookkeeping(tmp_path):
    sp = Spool(tmp_path / "s.sqlite", max_messages=5)
    seqs = sp.put_many([("t", f"m{i}".encode()) for i in range(8)])  # one transaction, oldest 3 trimmed
    assert seqs == list(range(seqs[0], seqs[0] + 8)) and sp.depth == 5 and sp.dropped == 3
    assert [s for s, *_ in sp.peek(10, after=seqs[5])] == seqs[6:]  # read-ahead past what is in flight
    # acks of a trimmed row, a duplicate, a never-existing seq and a gap: only rows really there count
    assert sp.ack_many([seqs[0], seqs[3], seqs[3], seqs[5], seqs[-1] + 100]) == 2
    assert sp.depth == 3 and sp.dropped == 3
    assert [s for s, *_ in sp.peek(10)] == [seqs[4], seqs[6], seqs[7]]  # the gap (seqs[4]) is not deleted by the range
    assert sp.ack_many([]) == 0 and sp.ack_many([seqs[3]]) == 0 and sp.depth == 3
    sp.put_many([("t", b"x", True), ("t", b"y"), ("t", b"z")])  # 6 > 5: the oldest one trimmed
    assert sp.depth == 5 and sp.dropped == 4 and sp.peek(1)[0][0] == seqs[6]
    assert [r for *_, r in sp.peek(10)][2] is True  # retain kept
    sp.ack_many([seqs[6], seqs[7]])
    sp.close()
    again = Spool(tmp_path / "s.sqlite", max_messages=5)
    assert again.depth == 3 and again.dropped == 4 and [p for _, _, p, _ in again.peek(10)] == [b"x", b"y", b"z"]


def test_sighting_lifetime_events():
    t = [100.0]
    tr = SightingTracker("cam", update_every_s=1.0, update_min_gain=0.1, clock=lambda: t[0])
    assert tr.update("unknown", 0.2) == []
    new = tr.update("robin", 0.5)
    assert [e["type"] for e in new] == ["new"] and new[0]["after"]["label"] == "robin" and new[0]["before"] == new[0]["after"]
    t[0] = 100.5
    assert tr.update("robin", 0.9) == []  # better, but within update_every_s
    t[0] = 101.5
    (upd,) = tr.update("robin", 0.9)
    assert upd["type"] == "update" and upd["before"]["best_score"] == 0.5 and upd["after"]["best_score"] == 0.9 and upd["after"]["frames"] == 3
    t[0] = 102.0
    end, new2 = tr.update("wren", 0.7)
    assert end["type"] == "end" and end["after"]["end_time"] == 102.0 and end["after"]["frames"] == 3 and end["after"]["label"] == "robin"
    assert new2["type"] == "new" and new2["after"]["label"] == "wren" and new2["after"]["id"] != end["after"]["id"]
    assert tr.update("unknown", 0.1)[0]["type"] == "end" and tr.end() == []


class Subscriber:
    """A real MQTT client with a persistent session (QoS 1), recording every message in arrival order."""

    def __init__(self, url_port: int, topic: str = "#", client_id: str = "test-subscriber") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", url_port, keepalive=10)
        self.c.loop_start()
        assert self.subscribed.wait(10)

    def events(self, suffix: str = "/events") -> list[dict]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t.endswith(suffix)]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def dedup(events: list[dict]) -> tuple[list[dict], int]:
    """Drop QoS 1 resends (same seq); return the events without seq and how many were dropped."""
    seen, out = set(), []
    for e in events:
        if e["seq"] in seen:
            continue
        seen.add(e["seq"])
        out.append({k: v for k, v in e.items() if k != "seq"})
    return out, len(events) - len(out)


@pytest.fixture
def broker(tmp_path):
    require(paho is not None, "paho-mqtt (pip install 'edgefg[mqtt]')")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.kill()


def publisher(broker, tmp_path, **kw):
    from edgefg.runtime.loop.events import EventLog
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

    seen = []
    opts = MqttOptions(broker.url, spool_path=tmp_path / "spool.sqlite", node_id="testnode", **kw)
    return MqttPublisher(opts, ["north", "south"], EventLog(listener=seen.append)).start(), seen


def wait_for(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def per_camera_in_order(events: list[dict]) -> bool:
    """Each camera's seqs, first arrivals only, strictly increasing."""
    last: dict[str, int] = {}
    seen = set()
    for e in events:
        if e["seq"] in seen:
            continue
        seen.add(e["seq"])
        if e["seq"] <= last.get(e["camera"], 0):
            return False
        last[e["camera"]] = e["seq"]
    return True


def test_window_delivers_thousands_once_in_order_and_close_drains(broker, tmp_path):
    """5,000 events (half spooled before the start, half produced while sending) through the in-flight
    window: after dedup by seq every one arrived once, each camera in order; close() right after the
    last event drains the spool to empty while connected."""
    # the fixture's broker writes its whole database after every change (~1,000 messages/s, slower on a
    # busy machine), and drops QoS 1 messages for a subscriber more than 1,000 behind (max_queued_messages);
    # this test is about the publisher: save once a second, and queue whatever the subscriber lags
    broker.kill()
    conf = broker.conf.read_text().replace("autosave_on_changes true", "autosave_on_changes false")
    broker.conf.write_text(conf + "max_queued_messages 0\n")
    broker.start()
    sub = Subscriber(broker.port, "edgefg/+/events", client_id="bulk")
    sp = Spool(tmp_path / "spool.sqlite")
    first = [("north" if i % 2 else "south", i) for i in range(2500)]
    seqs = sp.put_many([(f"edgefg/{cam}/events", json.dumps({"camera": cam, "n": i}).encode()) for cam, i in first])
    sp.close()
    pub, _ = publisher(broker, tmp_path)
    wait_for(lambda: pub.connected, what="publisher connect")
    for i in range(2500, 5000):
        cam = "north" if i % 2 else "south"
        seqs.append(pub.event(cam, {"camera": cam, "n": i}))
    pub.close(drain_s=60)  # at once: the drain must send what is left (it ends when the spool is empty, not at the limit)
    st = pub.stats()
    assert st["left_in_spool"] == 0 and st["spool_depth"] == 0 and not st["drain_deadline_hit"], st
    assert st["published"] == 5000 and 0 <= st["drained"] <= 5000 and st["drain_s"] < 60
    assert {"connected", "spool_depth", "spool_dropped", "published", "connects", "inflight"} <= set(st)
    wait_for(lambda: len({e["seq"] for e in sub.events()}) >= 5000, timeout=30, what="all 5000 at the subscriber")
    events = sub.events()
    sub.close()
    assert sorted({e["seq"] for e in events}) == sorted(seqs), "a seq is missing or unknown"
    got, duplicates = dedup(events)
    assert sorted(e["n"] for e in got) == list(range(5000))
    assert per_camera_in_order(events), "a camera's events arrived out of order"
    if st["connects"] == 1:
        assert duplicates == 0  # no reconnect: nothing is ever sent twice
    assert Spool(tmp_path / "spool.sqlite").depth == 0


def test_broker_killed_and_restarted_mid_run_loses_nothing(broker, tmp_path):
    """Events produced steadily; the broker is frozen (SIGSTOP) while a burst fills the in-flight
    window, then SIGKILLed with those messages unacknowledged, and restarted: paho resends the window,
    nothing newer overtakes it, every seq arrives (duplicates at most the window), in order, and a
    connected close leaves nothing in the spool."""
    sub = Subscriber(broker.port, "edgefg/+/events")
    pub, seen = publisher(broker, tmp_path, inflight=64)
    wait_for(lambda: pub.connected, what="publisher connect")
    produced = []
    lock = threading.Lock()

    def produce(n, start, pause=0.004):
        for i in range(start, start + n):
            cam = "north" if i % 3 else "south"
            ev = {"type": "update", "camera": cam, "n": i, "before": None, "after": {"label": f"bird{i % 7}", "frames": i}}
            with lock:  # seq order == produced order
                pub.event(cam, ev)
                produced.append(ev)
            if pause:
                time.sleep(pause)

    producer = threading.Thread(target=produce, args=(400, 0))
    producer.start()
    wait_for(lambda: len(sub.events()) >= 100, what="first events")
    broker.proc.send_signal(signal.SIGSTOP)  # frozen: it acknowledges nothing more
    produce(300, 1000, pause=0)  # a burst while frozen: the window fills and stays full
    wait_for(lambda: pub.stats()["inflight"] >= 48, what="most of the window in flight")  # it refills in batches of ≥ 8
    inflight_at_kill = pub.stats()["inflight"]
    broker.kill(signal.SIGKILL)  # mid-run, a full window unacknowledged, events still being produced
    wait_for(lambda: pub.spool.depth >= 300, what="events spooled while the broker is down")
    depth_while_down = pub.spool.depth
    time.sleep(0.3)
    broker.start()
    producer.join()
    produce(50, 2000)  # after the restart
    wait_for(lambda: len(dedup(sub.events())[0]) >= 750, timeout=30, what="every event at the subscriber")
    pub.close()
    got, duplicates = dedup(sub.events())
    events = sub.events()
    sub.close()
    assert sorted(e["n"] for e in got) == sorted(e["n"] for e in produced), "events lost or changed"
    assert got == produced, "events out of order"
    assert per_camera_in_order(events)
    assert duplicates <= inflight_at_kill + 2  # QoS 1 resends of what was in flight at the kill, at most
    st = pub.stats()
    assert 48 <= inflight_at_kill <= 64 and depth_while_down >= 300
    assert st["spool_depth"] == 0 and st["left_in_spool"] == 0 and st["spool_dropped"] == 0 and st["published"] == 750
    kinds = [e["event"] for e in seen]
    assert "mqtt_disconnected" in kinds and kinds.count("mqtt_connected") >= 2


def test_events_spooled_across_an_edgefg_restart(broker, tmp_path):
    broker.kill()  # the broker is down while the first edgefg process produces
    pub, _ = publisher(broker, tmp_path)
    for i in range(30):
        pub.event("north", {"type": "new", "n": i})
    pub.close(drain_s=0.1)  # edgefg stops with everything still spooled
    st = pub.stats()
    assert st["left_in_spool"] == 30 and st["drained"] == 0 and not st["drain_deadline_hit"]  # not connected: nothing to wait for
    assert Spool(tmp_path / "spool.sqlite").depth == 30
    broker.start()
    sub = Subscriber(broker.port, "edgefg/+/events")
    pub2, _ = publisher(broker, tmp_path)  # the next edgefg start sends them, in order
    wait_for(lambda: len(sub.events()) >= 30, what="spooled events after restart")
    pub2.close()
    sub.close()
    assert [e["n"] for e in dedup(sub.events())[0]] == list(range(30))


def test_full_spool_drops_oldest_and_counts(broker, tmp_path):
    broker.kill()
    pub, _ = publisher(broker, tmp_path, spool_max=10)
    for i in range(25):
        pub.event("south", {"n": i})
    assert pub.stats()["spool_dropped"] == 15
    broker.start()
    sub = Subscriber(broker.port, "edgefg/+/events")
    wait_for(lambda: len(sub.events()) >= 10, what="the 10 newest events")
    time.sleep(0.3)
    pub.close()
    sub.close()
    assert [e["n"] for e in dedup(sub.events())[0]] == list(range(15, 25))


def test_mqtt_credentials_never_from_the_command_line(tmp_path, monkeypatch):
    from edgefg.runtime.outputs.mqtt import MqttOptions, read_auth

    with pytest.raises(EdgefgError, match="must not carry credentials"):
        MqttOptions("mqtt://user:secret@broker:1883")
    with pytest.raises(EdgefgError, match="bad --mqtt URL"):
        MqttOptions("http://broker")
    with pytest.raises(EdgefgError, match="prefix"):
        MqttOptions("mqtt://b", prefix="a/#")
    auth = tmp_path / "auth.toml"
    auth.write_text('username = "cam"\npassword = "filepw"\n')
    assert read_auth(MqttOptions("mqtt://b", auth_file=auth)) == {"username": "cam", "password": "filepw"}
    monkeypatch.setenv("EDGEFG_MQTT_PASSWORD", "envpw")
    assert read_auth(MqttOptions("mqtt://b", auth_file=auth))["password"] == "envpw"
    auth.write_text('user = "x"\n')
    with pytest.raises(EdgefgError, match="unknown keys"):
        read_auth(MqttOptions("mqtt://b", auth_file=auth))
    assert MqttOptions("mqtts://b").port == 8883 and MqttOptions("mqtt://b").port == 1883


def test_edgefg_run_mqtt_end_to_end(broker, tiny_bundles, tmp_path):
    """Two cameras through the CLI: availability online (retained), discovery, retained state and
    sighting events per camera; SIGKILL of edgefg → the broker publishes the last will 'offline'."""
    video = write_video(tmp_path / "clip.mkv", n=20)
    sub = Subscriber(broker.port, "#", client_id="e2e")
    proc = subprocess.Popen([*EDGEFG, "run", str(tiny_bundles["fp32-intel-cpu"]), "--source", f"north={video}", "--source", f"south={video}",
                             "--loop", "--smooth", "majority:3", "--mqtt", broker.url, "--mqtt-prefix", "farm/edgefg", "--mqtt-spool",
                             str(tmp_path / "e2e.sqlite"), "--output", str(tmp_path / "out.jsonl")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wanted = {"farm/edgefg/south/state", "farm/edgefg/north/events", "farm/edgefg/south/events"}
        wait_for(lambda: wanted <= {t for t, _, _ in sub.messages}, timeout=60, what="state and events from both cameras")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    wait_for(lambda: (("farm/edgefg/available", b"offline") in [(t, p) for t, p, _ in sub.messages]), what="last will")
    msgs = list(sub.messages)
    sub.close()
    topics = {t for t, _, _ in msgs}
    assert ("farm/edgefg/available", b"online") in [(t, p) for t, p, _ in msgs]
    disc = [json.loads(p) for t, p, _ in msgs if t.startswith("homeassistant/sensor/") and t.endswith("/species/config")]  # other entities (drift) too
    assert {d["state_topic"] for d in disc} == {"farm/edgefg/north/state", "farm/edgefg/south/state"}
    assert all(d["availability_topic"] == "farm/edgefg/available" and d["value_template"] == "{{ value_json.label }}" for d in disc)
    state = json.loads(next(p for t, p, _ in msgs if t == "farm/edgefg/north/state"))
    assert set(state) >= {"label", "score", "top", "ts"}
    events = [json.loads(p) for t, p, _ in msgs if t == "farm/edgefg/north/events"]
    assert events[0]["type"] == "new" and events[0]["camera"] == "north" and set(events[0]["after"]) >= {"id", "label", "start_time", "best_score", "frames"}
    assert "farm/edgefg/south/events" in topics
    # retained: a new subscriber gets the state and availability at once
    late = Subscriber(broker.port, "farm/edgefg/#", client_id="late")
    wait_for(lambda: {"farm/edgefg/available", "farm/edgefg/north/state"} <= {t for t, _, r in late.messages if r}, what="retained messages")
    late.close()


def test_tls_and_password_from_a_file(tmp_path):
    """A TLS listener with a password file: the publisher connects with mqtts:// and an --mqtt-auth
    file (CA, username, password); a wrong password is refused without crashing."""
    require(paho is not None, "paho-mqtt (pip install 'edgefg[mqtt]')")
    from edgefg.runtime.loop.events import EventLog
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    broker = Mosquitto(tmp_path / "broker", tls=(cert, key), users={"cam": "pw-from-file"}).start()
    try:
        got = []
        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="tls-sub")
        sub.username_pw_set("cam", "pw-from-file")
        sub.tls_set(ca_certs=str(cert))
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("edgefg/#", qos=1)
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        auth = tmp_path / "auth.toml"
        auth.write_text(f'username = "cam"\npassword = "pw-from-file"\nca_file = "{cert}"\n')
        pub = MqttPublisher(MqttOptions(broker.url, auth_file=auth, spool_path=tmp_path / "s.sqlite", node_id="tls"), ["gate"]).start()
        pub.event("gate", {"type": "new", "n": 1})
        wait_for(lambda: any(t == "edgefg/gate/events" for t, _ in got), what="an event over TLS")
        pub.close()
        bad = tmp_path / "bad.toml"
        bad.write_text(f'username = "cam"\npassword = "wrong"\nca_file = "{cert}"\n')
        seen = []
        pub = MqttPublisher(MqttOptions(broker.url, auth_file=bad, spool_path=tmp_path / "s2.sqlite", node_id="tls2"), ["gate"],
                            EventLog(listener=seen.append)).start()
        pub.event("gate", {"type": "new", "n": 2})
        wait_for(lambda: any(e["event"] == "mqtt_refused" for e in seen), what="a refused login")
        assert pub.stats()["spool_depth"] == 1  # kept for when the credentials are fixed
        pub.close(drain_s=0.1)
        sub.disconnect()
        sub.loop_stop()
        assert (("edgefg/available", b"online") in got) and not any(b'"n":2' in p for _, p in got)
    finally:
        broker.kill()
