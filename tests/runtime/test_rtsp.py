"""A real RTSP server (GStreamer's gst-rtsp-server) stopped and restarted mid-stream: the RTSP camera's
frames resume within the stall timeout, the reconnect is counted, and a second camera on the same
model keeps running throughout."""
import threading
import time

import numpy as np

from edgefg.runtime import RunOptions
from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.loop.multicam import MultiPipeline
from tests.runtime.fakes import FakeSource
from tests.runtime.real_parts import RtspServer

STALL_S = 3.0


def test_rtsp_server_restart_mid_stream(tiny_bundles):
    server = RtspServer().start()
    events = []
    opts = RunOptions(stall_timeout_s=STALL_S, backoff_initial_s=0.2, backoff_max_s=0.5, on_event=events.append)
    other = FakeSource(n=10**6, live=True, interval=0.02, spec="yard")
    pipe = MultiPipeline(tiny_bundles["fp32-intel-cpu"], [CameraConfig("gate", server.url), CameraConfig("yard", "x")], opts, sources={"yard": other})
    times: dict[str, list[float]] = {"gate": [], "yard": []}
    box = {}

    def loop():
        for cam, _r, _ in pipe.results():
            times[cam.name].append(time.monotonic())
        box["done"] = True

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while len(times["gate"]) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(times["gate"]) >= 25, "no frames from the RTSP server"
        server.stop()
        t_stop = time.monotonic()
        time.sleep(1.0)
        server.start()
        t_back = time.monotonic()
        while time.monotonic() < t_back + 20 and not [x for x in times["gate"] if x > t_back]:
            time.sleep(0.05)
        resumed = [x for x in times["gate"] if x > t_back]
        time.sleep(0.5)
    finally:
        pipe.stop()
        t.join(10)
        snap = pipe.snapshot()
        pipe.close()
        server.stop()
    assert resumed, f"RTSP frames did not resume: {[e['event'] for e in events if e.get('camera') == 'gate']}"
    assert resumed[0] - t_back < STALL_S + 1.0, f"frames resumed {resumed[0] - t_back:.1f} s after the server came back"
    assert snap["cameras"]["gate"]["reconnects"] >= 1
    kinds = {e["event"] for e in events if e.get("camera") == "gate"}
    assert kinds & {"source_stalled", "source_lost"} and "source_opened" in kinds
    yard = np.array([x for x in times["yard"] if t_stop - 0.5 < x < resumed[0]])
    assert len(yard) > 20 and np.diff(yard).max() < 0.5, "the other camera waited on the RTSP outage"
