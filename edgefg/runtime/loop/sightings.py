"""Sightings: the lifetime of one smoothed label on one camera, reported as Frigate-style events.

A sighting starts when a camera's decided (smoothed, open-set) label becomes a class (``unknown``
starts none) and ends when the decision changes or the camera stops. Each change is an event
``{"type": "new" | "update" | "end", "camera", "before", "after"}`` where ``before``/``after`` are the
sighting before and after the change (for ``new`` both are the new sighting, as Frigate does).
A sighting's ``score`` is the smoothed score of its label now (``best_score`` the highest so far). The
``new`` event fires on the frame the smoothed decision switched, so its score is low (an EMA just
crossing); ``update`` is sent when the score or the best score moved by ``update_min_gain`` since the
last message — the first one as soon as ``first_update_s`` after ``new``, later ones at most every
``update_every_s`` seconds — so what MQTT and Home Assistant hold follows the smoothed score within
seconds, and a sighting lasting an hour is still a handful of messages, not one per frame.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgefg.runtime.engine.postprocess import UNKNOWN

_ids = itertools.count(1)


@dataclass
class Sighting:
    id: str
    camera: str
    label: str
    start_time: float
    end_time: float | None
    score: float  # the latest smoothed score
    best_score: float
    frames: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("start_time", "end_time"):
            d[k] = None if d[k] is None else round(d[k], 3)
        for k in ("score", "best_score"):
            d[k] = round(d[k], 4)
        return d


class SightingTracker:
    """Feed one camera's decisions; get the sighting events they cause."""

    def __init__(self, camera: str, update_every_s: float = 5.0, update_min_gain: float = 0.05, clock: Any = time.time,
                 first_update_s: float = 1.0) -> None:
        self.camera = camera
        self.update_every_s = update_every_s
        self.first_update_s = min(first_update_s, update_every_s)
        self.update_min_gain = update_min_gain
        self.clock = clock
        self.current: Sighting | None = None
        self._last_sent: dict[str, Any] | None = None
        self._last_sent_at = 0.0

    def update(self, label: str, score: float) -> list[dict[str, Any]]:
        now = self.clock()
        out: list[dict[str, Any]] = []
        cur = self.current
        if cur is not None and label == cur.label:
            cur.frames += 1
            cur.score = score
            if score > cur.best_score:
                cur.best_score = score
            sent = self._last_sent or {}
            moved = (abs(cur.score - sent.get("score", cur.score)) >= self.update_min_gain
                     or cur.best_score - sent.get("best_score", cur.best_score) >= self.update_min_gain)
            wait = self.first_update_s if sent.get("_kind") == "new" else self.update_every_s
            if moved and now - self._last_sent_at >= wait:
                out.append(self._event("update", cur, now))
            return out
        if cur is not None:
            out += self.end(now)
        if label != UNKNOWN:
            self.current = Sighting(f"{now:.3f}-{self.camera}-{next(_ids)}", self.camera, label, now, None, score, score, 1)
            out.append(self._event("new", self.current, now))
        return out

    def end(self, now: float | None = None) -> list[dict[str, Any]]:
        """End the current sighting (label changed, camera stopped)."""
        cur = self.current
        if cur is None:
            return []
        cur.end_time = self.clock() if now is None else now
        self.current = None
        return [self._event("end", cur, cur.end_time)]

    def live(self) -> dict[str, Any] | None:
        """The open sighting as it is now (frames, smoothed score), between its events."""
        return None if self.current is None else self.current.as_dict()

    def _event(self, kind: str, s: Sighting, now: float) -> dict[str, Any]:
        after = s.as_dict()
        before = after if kind == "new" else {k: v for k, v in (self._last_sent or {}).items() if k != "_kind"}
        self._last_sent, self._last_sent_at = {**copy.deepcopy(after), "_kind": kind}, now
        return {"type": kind, "camera": self.camera, "before": before, "after": after}
