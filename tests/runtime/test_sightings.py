"""Sighting events follow the smoothed score: the first update soon after `new`, later ones rate-limited."""
from types import SimpleNamespace

from edgefg.runtime.loop.sightings import SightingTracker


def ema_scores(n: int, alpha: float = 0.5, start: float = 0.0, target: float = 0.95) -> list[float]:
    out, s = [], start
    for _ in range(n):
        s = alpha * target + (1 - alpha) * s
        out.append(s)
    return out


def test_a_sighting_reaches_its_smoothed_score_within_a_second():
    t = [0.0]
    tr = SightingTracker("cam", update_every_s=5.0, update_min_gain=0.05, clock=lambda: t[0])
    events = []
    for i, s in enumerate(ema_scores(30)):  # 10 FPS: the EMA crosses 0.5 on frame 1, then climbs to 0.95
        t[0] = i / 10
        events += tr.update("robin" if s >= 0.45 else "unknown", s)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "new" and events[0]["after"]["score"] < 0.6  # the decision switched on a low score
    first_update = next(e for e in events if e["type"] == "update")
    assert first_update["after"]["score"] >= 0.9 and first_update["before"]["score"] < 0.6
    assert first_update["after"]["end_time"] is None and "_kind" not in first_update["before"]
    assert kinds.count("update") == 1  # then nothing: the score is steady and update_every_s has not passed
    live = tr.live()  # between events: the frames so far and today's score, not the `new` snapshot
    assert live["frames"] == sum(1 for s in ema_scores(30) if s >= 0.45) and live["score"] > 0.94


def test_a_falling_score_is_an_update_too_and_updates_are_rate_limited():
    t = [0.0]
    tr = SightingTracker("cam", update_every_s=5.0, update_min_gain=0.05, first_update_s=1.0, clock=lambda: t[0])
    tr.update("robin", 0.9)
    t[0] = 0.5
    assert tr.update("robin", 0.6) == []  # moved, but within first_update_s
    t[0] = 1.0
    (upd,) = tr.update("robin", 0.6)
    assert upd["after"]["score"] == 0.6 and upd["after"]["best_score"] == 0.9  # a drop is reported
    t[0] = 3.0
    assert tr.update("robin", 0.3) == []  # within update_every_s of the last update
    t[0] = 6.0
    assert tr.update("robin", 0.3)[0]["after"]["score"] == 0.3
    t[0] = 20.0
    assert tr.update("robin", 0.32) == []  # steady: no message however long it lasts
    assert tr.live()["frames"] == 6


def test_the_page_lists_an_open_sighting_as_it_is_now():
    from edgefg.runtime.loop.events import EventLog
    from edgefg.runtime.outputs.live import LiveOutputs

    live = LiveOutputs(["cam"], EventLog(listener=lambda e: None))
    frame = SimpleNamespace(image=None)
    for s in (0.5, 0.7, 0.9, 0.95):
        live.on_result("cam", {"label": "robin", "score": s}, frame)
    (row,) = live.sightings()
    assert row["frames"] == 4 and row["score"] == 0.95 and row["end_time"] is None  # not the `new` snapshot (1 frame, 0.5)
    live.on_result("cam", {"label": "unknown", "score": 0.2}, frame)
    (ended,) = live.sightings()
    assert ended["frames"] == 4 and ended["end_time"] is not None
