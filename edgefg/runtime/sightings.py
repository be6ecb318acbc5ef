"""Sightings: the lifetime of one smoothed label on one camera, reported as Frigate-style events.

A sighting starts when a camera's decided (smoothed, open-set) label becomes a class (``unknown``
starts none) and ends when the decision changes or the camera stops. Each change is an event
``{"type": "new" | "update" | "end", "camera", "before", "after"}`` where ``before``/``after`` are the
sighting before and after the change (for ``new`` both are the new sighting, as Frigate does).
``update`` is sent when the best score rose by ``update_min_gain`` and at most every
``update_every_s`` seconds, so a sighting lasting an hour is a handful of messages, not one per frame.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any

from edgefg.runtime.postprocess import UNKNOWN

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

    def __init__(self, camera: str, update_every_s: float = 5.0, update_min_gain: float = 0.05, clock: Any = time.time) -> None:
        self.camera = camera
        self.update_every_s = update_every_s
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
            if (cur.best_score - self._last_sent["best_score"] >= self.update_min_gain  # type: ignore[index]
                    and now - self._last_sent_at >= self.update_every_s):
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

    def _event(self, kind: str, s: Sighting, now: float) -> dict[str, Any]:
        after = s.as_dict()
        before = after if kind == "new" else self._last_sent
        self._last_sent, self._last_sent_at = copy.deepcopy(after), now
        return {"type": kind, "camera": self.camera, "before": before, "after": after}
