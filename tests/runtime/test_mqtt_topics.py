"""MQTT options that used to kill publishing silently (issue #26, class 3): a topic option that breaks
the MQTT rules is refused at start (exit 2, one error line, nothing written), and an exception in
paho's network thread or the sender thread is surfaced (event, ``healthy``/``connected`` false) and the
thread is started again, with a real mosquitto broker."""
from __future__ import annotations

import subprocess
import time

import pytest

from edgefg.errors import EdgefgError
from tests.conftest import EDGEFG
from tests.runtime.fakes import write_video
from tests.runtime.real_parts import Mosquitto, free_port, require
from tests.runtime.test_mqtt import REPO, Subscriber, dedup, wait_for

try:
    import paho.mqtt.client as paho
except ImportError:  # pragma: no cover
    paho = None

BAD_CLI = [  # (flag, value, what the error line says)
    ("--mqtt-prefix", "farm/+/edgefg", "wildcard"),
    ("--mqtt-prefix", "farm/#", "wildcard"),
    ("--mqtt-prefix", "a" * 70_000, "65,535"),
    ("--mqtt-prefix", "é" * 33_000, "66,000 UTF-8 bytes"),  # 33,000 characters, 66,000 bytes: bytes count, not characters
    ("--mqtt-prefix", "a" * (65_535 - 300), "with the levels edgefg adds"),  # fits alone, not with /<camera>/<name>
    ("--mqtt-prefix", "$SYS/edgefg", "'$'"),
    ("--mqtt-prefix", "farm//edgefg", "empty level"),
    ("--mqtt-prefix", "/edgefg", "empty level"),
    ("--mqtt-prefix", "edgefg/", "empty level"),
    ("--mqtt-prefix", "farm\x1bedgefg", "control character U+001B"),
    ("--mqtt-discovery-prefix", "homeassistant/+", "wildcard"),
    ("--mqtt-discovery-prefix", "#", "wildcard"),
    ("--mqtt-discovery-prefix", "$SYS", "'$'"),
    ("--mqtt-discovery-prefix", "", "empty"),
    ("--mqtt-discovery-prefix", "h" * 70_000, "65,535"),
]


@pytest.mark.parametrize("flag,value,why", BAD_CLI, ids=[f"{f}-{w}-{len(v)}" for f, v, w in BAD_CLI])
def test_a_bad_topic_option_is_exit_2_and_one_line(flag, value, why, tiny_bundles, tmp_path):
    video = write_video(tmp_path / "clip.mkv", n=4)
    spool = tmp_path / "spool.sqlite"
    t0 = time.monotonic()
    r = subprocess.run([*EDGEFG, "run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", str(video), "--mqtt", f"mqtt://127.0.0.1:{free_port()}",
                        "--mqtt-spool", str(spool), flag, value, "--output", str(tmp_path / "out.jsonl")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(errors) == 1 and all(ln.startswith(("error:", "hint:")) for ln in lines), lines  # no traceback, no event lines
    assert flag in errors[0] and why in errors[0], errors[0]
    assert len(errors[0]) < 300  # a 70,000-byte prefix is not printed whole
    assert "\x1b" not in r.stderr  # an escape from the option is not written raw to the terminal
    assert not spool.exists() and not (tmp_path / "out.jsonl").exists()  # refused before anything was opened
    assert time.monotonic() - t0 < 60


def test_topic_rules_in_the_api():
    from edgefg.runtime.outputs.mqtt import MAX_TOPIC_BYTES, TOPIC_ROOM, MqttOptions, text_problem, topic_problem

    for kw, match in [({"prefix": "a\x00b"}, "NUL"), ({"discovery_prefix": "ha\x00"}, "NUL"), ({"prefix": "a\udcff"}, "UTF-8"),
                      ({"prefix": "a\ufffe"}, "non-character"), ({"prefix": "a\x85"}, r"U\+0085"), ({"discovery_prefix": "ha/+/x"}, "wildcard"),
                      ({"node_id": "my/node"}, "node id"), ({"node_id": "n+"}, "node id"), ({"client_id": "cam\x00"}, "client id"),
                      ({"client_id": ""}, "client id"), ({"client_id": "c" * 65_536}, "client id")]:
        with pytest.raises(EdgefgError, match=match):
            MqttOptions("mqtt://b", **kw)
    limit = MAX_TOPIC_BYTES - TOPIC_ROOM
    assert MqttOptions("mqtt://b", prefix="p" * limit).prefix  # the longest prefix that still leaves room
    with pytest.raises(EdgefgError, match="with the levels edgefg adds"):
        MqttOptions("mqtt://b", prefix="p" * (limit + 1))
    assert MqttOptions("mqtt://b", prefix="farm/édgefg/ü", discovery_prefix=None, client_id="any id/+# is fine").client_id
    assert topic_problem("a/b") is None and topic_problem("a/+") and text_problem("x" * MAX_TOPIC_BYTES) is None
    assert text_problem("x" * (MAX_TOPIC_BYTES + 1))


@pytest.fixture
def broker(tmp_path):
    require(paho is not None, "paho-mqtt (pip install 'edgefg[mqtt]')")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.kill()


def make_publisher(broker, tmp_path, cameras=("north",)):
    from edgefg.runtime.loop.events import EventLog
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

    seen: list[dict] = []
    pub = MqttPublisher(MqttOptions(broker.url, spool_path=tmp_path / "spool.sqlite", node_id="topics"), list(cameras), EventLog(listener=seen.append))
    return pub, seen


def test_an_exception_in_a_callback_is_surfaced_and_the_client_comes_back(broker, tmp_path, capfd):
    """on_connect raises twice (as a publish to a bad topic inside it did): before, paho's network thread
    died with a traceback and the run looked healthy while nothing was published. Now: an event, healthy
    and connected false, the thread started again, and once the callback works the events arrive."""
    sub = Subscriber(broker.port, "edgefg/#", client_id="cb-sub")
    pub, seen = make_publisher(broker, tmp_path)
    real, calls = pub._on_connect, []

    def failing_on_connect(*args):
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RuntimeError("forced failure in on_connect")
        return real(*args)

    pub.client.on_connect = failing_on_connect
    pub.start()
    try:
        wait_for(lambda: any(e["event"] == "mqtt_client_failed" for e in seen), timeout=10, what="the failure surfaced")
        st = pub.stats()
        assert st["healthy"] is False and st["connected"] is False and st["client_errors"] >= 1, st
        assert "forced failure in on_connect" in st["last_error"]
        failed = next(e for e in seen if e["event"] == "mqtt_client_failed")
        assert failed["thread"] == "network" and "RuntimeError" in failed["error"] and "reconnecting" in failed["action"]
        assert pub.event("north", {"type": "new", "n": 1}) is not None  # spooled meanwhile
        wait_for(lambda: pub.connected, timeout=15, what="the client back after the restarts")
        wait_for(lambda: any(t == "edgefg/north/events" for t, _, _ in sub.messages), timeout=10, what="the spooled event")
        st = pub.stats()
        assert st["healthy"] is True and st["client_errors"] == 2 and st["restarts"] >= 2 and len(calls) == 3, (st, len(calls))
        assert calls[2] - calls[1] >= 1.5  # backed off (1 s, then 2 s)
        m = {name: samples for name, _, _, samples in pub.metrics()}
        assert m["mqtt_healthy"] == [({}, 1)] and m["mqtt_client_errors_total"] == [({}, 2)]
    finally:
        pub.close(drain_s=2)
        sub.close()
    assert "Traceback" not in capfd.readouterr().err  # surfaced as an event, not a dying thread's traceback
    assert [e["n"] for e in dedup(sub.events())[0]] == [1]


def test_an_exception_in_the_sender_is_surfaced_and_it_goes_on(broker, tmp_path):
    sub = Subscriber(broker.port, "edgefg/#", client_id="sender-sub")
    pub, seen = make_publisher(broker, tmp_path)
    real, fails = pub.spool.peek, [3]

    def failing_peek(*args, **kwargs):
        if fails[0] > 0 and pub.spool.depth:
            fails[0] -= 1
            raise KeyError("forced failure in the sender")
        return real(*args, **kwargs)

    pub.spool.peek = failing_peek
    pub.start()
    try:
        wait_for(lambda: pub.connected, what="connect")
        for i in range(5):
            pub.event("north", {"type": "new", "n": i})
        wait_for(lambda: any(e["event"] == "mqtt_client_failed" and e["thread"] == "sender" for e in seen), timeout=10, what="the sender failure")
        assert pub.stats()["healthy"] is False
        wait_for(lambda: len(dedup(sub.events())[0]) == 5, timeout=20, what="the 5 events after the sender recovered")
        wait_for(lambda: pub.stats()["healthy"], timeout=5, what="healthy again")
        assert pub.stats()["client_errors"] == 3
        assert sum(e["event"] == "mqtt_client_failed" for e in seen) == 1  # one event a minute, every failure counted
    finally:
        pub.close(drain_s=2)
        sub.close()
    assert [e["n"] for e in dedup(sub.events())[0]] == list(range(5))


def test_a_bad_runtime_topic_is_reported_not_fatal(broker, tmp_path):
    """A field output asking for a bad retained topic at run time: reported once, never stored (each
    reconnect would fail on it), the rest goes on."""
    sub = Subscriber(broker.port, "edgefg/#", client_id="rt-sub")
    pub, seen = make_publisher(broker, tmp_path)
    pub.start()
    try:
        wait_for(lambda: pub.connected, what="connect")
        pub.publish_retained("north", "drift/+", {"x": 1})
        pub.publish_retained("north", "drift/+", {"x": 2})
        pub.publish_retained("north", "drift", {"x": 3})
        wait_for(lambda: any(t == "edgefg/north/drift" for t, _, _ in sub.messages), what="the good retained topic")
        assert [e["event"] for e in seen].count("mqtt_bad_topic") == 1 and pub.stats()["healthy"]
        assert "edgefg/north/drift/+" not in pub._extra_retained
    finally:
        pub.close(drain_s=1)
        sub.close()
