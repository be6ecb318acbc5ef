"""The camera loop (edgefg.runtime.loop.camera_loop) and the output driver (edgefg.runtime.outputs.contract.Outputs): one frame
path for one source and for named cameras, every built-in output under the one Output protocol, the
order outputs close in, and no import circle in the runtime."""
import ast
from pathlib import Path

import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.loop.camera_loop import CameraLoop, NamedCameras, OneSource, RunOptions
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.contract import Output, OutputBase, Outputs
from edgefg.runtime.serve import Pipeline
from tests.runtime.fakes import FakeSource

RUNTIME = Path(__file__).resolve().parents[2] / "edgefg" / "runtime"


@pytest.fixture(scope="module")
def model(bundle):
    m = LoadedBundle(bundle)
    yield m
    m.close()


def test_one_source_and_one_named_camera_share_the_frame_path(model):
    one = Pipeline(model, FakeSource(n=12, live=False))
    unnamed = [r for r, _ in one.results()]
    s1 = one.summary()
    one.close()
    named = CameraLoop(model, [CameraConfig("cam", "x")], sources={"cam": FakeSource(n=12, live=False)})
    got = [(c.name, r) for c, r, _ in named.run()]
    s2 = named.summary()
    named.close()
    assert isinstance(one.layout, OneSource) and isinstance(named.layout, NamedCameras)
    assert {c for c, _ in got} == {"cam"} and all(r["camera"] == "cam" for _, r in got)
    drop = ("latency_ms", "camera")
    assert [{k: v for k, v in r.items() if k not in drop} for _, r in got] == [{k: v for k, v in r.items() if k not in drop} for r in unnamed]
    assert "camera" not in unnamed[0] and list(got[0][1])[0] == "camera"
    # the classic summary keeps its stage percentiles; named cameras report per camera
    assert s1["frames"] == s2["frames"] == 12 and set(s1["stages_ms"]) >= {"preprocess", "infer", "postprocess"} and "cameras" not in s1
    assert s2["cameras"]["cam"]["frames"] == 12 and s2["stages_ms"] == {} and "preprocess_in" not in s2


def test_batch_and_wait_defaults_per_layout(model):
    def loop(layout, cams, **kw):
        lp = CameraLoop(model, [CameraConfig(n, "x") for n in cams], RunOptions(**kw), sources={n: FakeSource(n=1, live=False) for n in cams}, layout=layout)
        lp.close()
        return lp.batch, lp.batch_wait_s

    assert loop(OneSource(), ["default"]) == (1, 0.0)
    assert loop(NamedCameras(), ["a", "b", "c"]) == (3, 0.005)  # one frame per camera, 5 ms for the others
    assert loop(NamedCameras(), ["a", "b"], batch=8, batch_wait_ms=0) == (8, 0.0)
    with pytest.raises(EdgefgError, match="one source expected"):
        loop(OneSource(), ["a", "b"])


class Rec(OutputBase):
    def __init__(self, name, log, close_order=1, fail=None):
        self.name, self.log, self.close_order, self.fail = name, log, close_order, fail

    def on_result(self, camera, result, frame):
        self.log.append(("result", self.name))
        if self.fail == "result":
            raise OSError(28, "No space left on device")

    def close(self):
        self.log.append(("close", self.name))
        if self.fail == "close":
            raise OSError(5, "I/O error")
        if self.fail == "interrupt":
            raise KeyboardInterrupt
        return {"closed": self.name}

    def abort(self):
        self.log.append(("abort", self.name))


def test_outputs_are_fed_in_order_and_closed_live_first_mqtt_and_http_last():
    log, seen = [], []
    outs = Outputs([Rec("http", log, 3), Rec("jsonl", log), Rec("live", log, 0), Rec("mqtt", log, 2), Rec("collect", log, fail="result"),
                    Rec("video", log, fail="close")], EventLog(listener=seen.append))
    for _ in range(3):
        outs.on_result("default", {}, None)
    assert [n for k, n in log if k == "result"] == ["http", "jsonl", "live", "mqtt", "collect", "video"] * 3
    errors = [e for e in seen if e["event"] == "sink_error"]
    assert [(e["sink"], e["error"]) for e in errors] == [("collect", "No space left on device")]  # three failures, one event a minute
    summary = outs.close()
    assert [n for k, n in log if k == "close"] == ["live", "jsonl", "collect", "video", "mqtt", "http"]
    assert list(summary) == ["live", "jsonl", "collect", "mqtt", "http"]  # the failing close is an event, not a crash
    assert [e["sink"] for e in seen if e["event"] == "sink_error"] == ["collect", "video"]
    outs.abort()
    assert not [k for k, _ in log if k == "abort"]  # nothing left open


def test_an_interrupted_close_leaves_the_rest_to_abort():
    log = []
    outs = Outputs([Rec("live", log, 0), Rec("drift", log, fail="interrupt"), Rec("mqtt", log, 2)], EventLog(listener=lambda e: None))
    with pytest.raises(KeyboardInterrupt):
        outs.close()
    outs.abort()
    assert log == [("close", "live"), ("close", "drift"), ("abort", "drift"), ("abort", "mqtt")]


def test_every_built_in_output_follows_the_protocol(tmp_path):
    from edgefg.runtime.outputs.httpd import HealthServer, HttpOutput
    from edgefg.runtime.outputs.live import LiveOutputs, MqttOutput
    from edgefg.runtime.outputs.sinks import JsonlOutput, JsonlSink, VideoOutput, VideoSink

    server = HealthServer("127.0.0.1:0", lambda: {"running": True, "started": 0, "info": {}})
    built = [JsonlOutput(JsonlSink(tmp_path / "r.jsonl")), VideoOutput({"a": VideoSink(tmp_path / "a.mkv")}),
             LiveOutputs(["a"], EventLog(listener=lambda e: None)), MqttOutput(object()), HttpOutput(server)]
    try:
        for o in built:
            assert isinstance(o, Output), type(o).__name__
        assert sorted(o.close_order for o in built) == [0, 1, 1, 2, 3]
    finally:
        server.close()


def _imports(path: Path) -> set[str]:
    """Every edgefg module ``path`` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("edgefg.runtime.")}


def test_no_import_circle_in_the_runtime():
    modules = {"edgefg.runtime." + ".".join(p.relative_to(RUNTIME).with_suffix("").parts): p for p in RUNTIME.rglob("*.py") if p.stem != "__init__"}
    assert "edgefg.runtime.loop.multicam" in modules and "edgefg.runtime.serve" in modules
    graph = {m: _imports(p) & set(modules) for m, p in modules.items()}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(m for m in modules if m in reach(m))
    assert not circles, f"import circles through {circles}"
    assert "edgefg.runtime.serve" not in reach("edgefg.runtime.loop.multicam")
    assert "edgefg.runtime.loop.multicam" not in reach("edgefg.runtime.serve")


def test_mqtt_and_http_as_outputs_of_one_run(tiny_bundles, image_folder, tmp_path):
    """--mqtt (its broker away) with --http: MQTT's counters in the stats events, /api/state, /metrics
    (with the client's own metrics) and the summary, as before MQTT became an output."""
    pytest.importorskip("paho.mqtt.client")
    import json
    import threading
    import time
    import urllib.request

    from edgefg.runtime.outputs.mqtt import MqttOptions
    from edgefg.runtime.serve import run_pipeline

    events, addr, box = [], {}, {}

    def on_event(e):
        events.append(e)
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]

    mqtt = MqttOptions("mqtt://127.0.0.1:1", spool_path=tmp_path / "spool.sqlite", drain_s=0.2)
    opts = RunOptions(max_frames=300, loop=True, http="127.0.0.1:0", mqtt=mqtt, stats_every_s=1e-9, on_event=on_event, output=tmp_path / "r.jsonl")
    t = threading.Thread(target=lambda: box.setdefault("s", run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), opts, handle_signals=False)),
                         daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while "url" not in addr and time.monotonic() < deadline:
        time.sleep(0.02)
    with urllib.request.urlopen(addr["url"] + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    with urllib.request.urlopen(addr["url"] + "/api/state", timeout=5) as r:
        state = json.loads(r.read())
    t.join(60)
    assert not t.is_alive()
    assert "# TYPE edgefg_mqtt_connected gauge" in metrics and "edgefg_mqtt_connected 0" in metrics
    assert "edgefg_mqtt_healthy" in metrics  # the client's own metrics, served through its output
    assert state["mqtt"]["connected"] is False and "mqtt" not in state["outputs"]  # the page's header, not a page section
    stats = [e for e in events if e["event"] == "stats"]
    assert stats and all("mqtt" in e for e in stats)
    s = box["s"]
    assert s["frames"] == 300 and s["mqtt"]["spool_depth"] >= 1 and "drained" in s["mqtt"]  # sightings spooled for later
