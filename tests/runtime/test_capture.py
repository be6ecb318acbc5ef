"""Capture thread, frame buffer, reconnection and stall handling — with fault-injecting fake sources."""
import threading
import time

from edgefg.errors import SourceError
from edgefg.runtime.capture.reader import Capture, FrameBuffer, Item, RetryPolicy
from edgefg.runtime.capture.sources import Frame
from edgefg.runtime.loop.events import EventLog
from tests.runtime.fakes import FakeSource, FlakyCamera

FAST = dict(backoff_initial_s=0.001, backoff_max_s=0.01)


def item(i):
    return Item(Frame(i, 0.0, None), 0.0, 0.0)


def drain(cap: Capture, timeout=10.0):
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = cap.buffer.get_batch(1, timeout=0.05)
        out += batch
        if not batch and cap.buffer.closed:
            return out
    raise AssertionError("capture did not finish")


def test_latest_frame_slot_drops_and_counts():
    buf = FrameBuffer(1, drop_oldest=True)
    for i in range(5):
        assert buf.put(item(i))
    assert buf.dropped == 4
    assert [it.frame.index for it in buf.get_batch(4, timeout=0.1)] == [4]


def test_blocking_buffer_never_drops():
    buf = FrameBuffer(2, drop_oldest=False)
    got = []

    def consumer():
        for _ in range(10):
            got.extend(buf.get_batch(1, timeout=2))
            time.sleep(0.002)

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(10):
        assert buf.put(item(i))
    t.join(5)
    assert [it.frame.index for it in got] == list(range(10)) and buf.dropped == 0


def test_micro_batch_fill_wait():
    buf = FrameBuffer(4, drop_oldest=False)
    buf.put(item(0))
    threading.Timer(0.02, lambda: buf.put(item(1))).start()
    assert len(buf.get_batch(2, timeout=1, fill_wait=0.5)) == 2


def test_file_source_read_in_order_with_corrupt_frames():
    events = EventLog()
    src = FakeSource(n=12, live=False, corrupt={3: None, 5: "gray", 7: "float", 9: "rgba", 10: "empty"})
    cap = Capture(src, src.reopen, RetryPolicy(**FAST), events, capacity=2).start()
    items = drain(cap)
    assert [it.frame.index for it in items] == list(range(12))
    bad = {it.frame.index: it.error for it in items if it.error}
    assert set(bad) == {3, 7, 10}  # undecodable, wrong dtype, empty
    good = {it.frame.index: it.frame.image for it in items if not it.error}
    assert good[5].shape == (96, 128, 3) and good[9].shape == (96, 128, 3)  # gray / RGBA → BGR
    assert events.counts["source_ended"] == 1 and cap.error is None


def test_killed_and_restored_20_times_recovers_every_time():
    cam = FlakyCamera(kills=20, frames_per_session=3, dead_opens=2)
    events = EventLog()
    cap = Capture(None, cam, RetryPolicy(**FAST), events, capacity=1).start()
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for it in cap.buffer.get_batch(1, timeout=0.05):
            seen.add(it.frame.name)
        if "flaky-cam-21" in seen:
            break
    cap.stop()
    assert "flaky-cam-21" in seen, events.counts
    assert cam.sessions == 21 and cam.failed_opens == 40
    assert events.counts["source_lost"] == 20 and events.counts["source_open_failed"] == 40
    assert cap.reconnects == 20 and cap.error is None


def test_gives_up_after_max_retries():
    calls = []

    def dead():
        calls.append(1)
        raise SourceError("camera gone")

    events = EventLog()
    cap = Capture(FakeSource(n=3, fail_at=2), dead, RetryPolicy(max_retries=3, **FAST), events).start()
    drain(cap)
    assert isinstance(cap.error, SourceError) and "3 retries" in cap.error.message
    assert len(calls) == 3 and events.counts["source_gave_up"] == 1


def test_stalled_source_is_reopened():
    opened = []

    def factory():
        opened.append(1)
        # the first session freezes after 2 frames (for far longer than the stall timeout)
        return FakeSource(n=4, stall_at=2 if len(opened) == 1 else None, stall_s=5.0, spec=f"cam-{len(opened)}")

    events = EventLog()
    cap = Capture(None, factory, RetryPolicy(stall_timeout_s=0.2, **FAST), events).start()
    names = []
    t0 = time.monotonic()
    while "cam-2" not in names and time.monotonic() - t0 < 5:
        names += [it.frame.name for it in cap.buffer.get_batch(1, timeout=0.05)]
    cap.stop()
    assert "cam-2" in names and time.monotonic() - t0 < 3
    assert cap.stalls >= 1 and events.counts["source_stalled"] >= 1


def test_events_are_json_lines(tmp_path):
    import io
    import json

    buf = io.StringIO()
    log = EventLog(buf)
    log.emit("source_lost", source="x", error="boom")
    rec = json.loads(buf.getvalue())
    assert rec["event"] == "source_lost" and rec["source"] == "x" and "ts" in rec


def test_backoff_is_exponential_and_capped():
    p = RetryPolicy(backoff_initial_s=0.5, backoff_max_s=4.0)
    assert [p.delay(i) for i in (1, 2, 3, 4, 5, 9)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
