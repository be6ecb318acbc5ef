"""The best frame of each sighting, as Frigate keeps a snapshot per detection.

While a sighting is open its best frame (the highest smoothed score so far) is held by reference; it is
JPEG-encoded only when the live outputs ask at a sighting event (``new``, ``update``, ``end``), so a steady
sighting costs nothing per frame. The JPEGs of the last ``keep`` sightings stay for HTTP
(``/snapshot.jpg?sighting=ID``); MQTT gets each one retained on ``<prefix>/<camera>/snapshot`` (a Home
Assistant image entity).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Open:
    sighting: str
    score: float
    image: np.ndarray
    result: dict[str, Any]
    box: tuple[int, int, int, int] | None
    dirty: bool = True  # a better frame than the last one encoded


class SightingSnapshots:
    """Best frame per open sighting (one per camera), JPEGs of the last ``keep`` sightings."""

    def __init__(self, keep: int = 50, quality: int = 80, max_side: int = 960) -> None:
        self.keep, self.quality, self.max_side = keep, quality, max_side
        self._open: dict[str, _Open] = {}
        self._jpeg: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0
        self.failed = 0  # frames that could not be encoded (no snapshot for that sighting event)

    def offer(self, camera: str, sighting: str, score: float, image: np.ndarray, result: dict[str, Any],
              box: tuple[int, int, int, int] | None = None) -> None:
        """A frame of the camera's open sighting ``sighting``: kept when it scores higher than the best so far."""
        cur = self._open.get(camera)
        if cur is not None and cur.sighting != sighting:
            self.close(camera)
            cur = None
        if cur is None or score > cur.score:
            self._open[camera] = _Open(sighting, score, image, dict(result), box)

    def take(self, camera: str) -> tuple[str, bytes] | None:
        """The open sighting's best frame as JPEG when it is newer than the last one taken, else None."""
        cur = self._open.get(camera)
        if cur is None or not cur.dirty:
            return None
        data = self._encode(cur)
        cur.dirty = False
        if data is None:
            return None
        with self._lock:
            self._jpeg[cur.sighting] = data
            self._jpeg.move_to_end(cur.sighting)
            while len(self._jpeg) > self.keep:
                self._jpeg.popitem(last=False)
        return cur.sighting, data

    def close(self, camera: str) -> tuple[str, bytes] | None:
        """The sighting ended: its last best frame (when not taken yet); the frame itself is let go."""
        out = self.take(camera)
        self._open.pop(camera, None)
        return out

    def jpeg(self, sighting: str) -> bytes | None:
        with self._lock:
            return self._jpeg.get(sighting)

    def has(self, sighting: str) -> bool:
        with self._lock:
            return sighting in self._jpeg

    def _encode(self, cur: _Open) -> bytes | None:
        import cv2

        from edgefg.runtime.outputs.sinks import annotate

        try:  # runs on the pipeline's thread: a frame OpenCV cannot draw on or encode costs its snapshot, never the run
            image = annotate(cur.image, cur.result, cur.box)
            h, w = image.shape[:2]
            if max(h, w) > self.max_side:
                f = self.max_side / max(h, w)
                image = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        except (cv2.error, ValueError, TypeError):
            ok = False
        if not ok:
            self.failed += 1
            return None
        self.encoded += 1
        return buf.tobytes()
