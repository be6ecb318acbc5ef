"""What the live outputs share: each camera's newest frame + result (for the MJPEG stream and the
web page), its sighting tracker, the last sightings, and the MQTT publisher when there is one.

The pipeline loop calls :meth:`LiveOutputs.on_result` for every classified frame; HTTP threads read
:meth:`jpeg` and :meth:`sightings`. Frames are JPEG-encoded only when a stream asks for one.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from edgefg.runtime.events import EventLog
from edgefg.runtime.sightings import SightingTracker

RoiBox = Callable[[tuple[int, ...]], tuple[int, int, int, int]]


class LiveOutputs:
    def __init__(self, cameras: list[str], events: EventLog, mqtt: Any = None, keep_sightings: int = 50,
                 update_every_s: float = 5.0) -> None:
        self.cameras = list(cameras)
        self.events = events
        self.mqtt = mqtt
        self.trackers = {c: SightingTracker(c, update_every_s=update_every_s) for c in cameras}
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep_sightings)
        self._frames: dict[str, tuple[np.ndarray, dict[str, Any], tuple[int, int, int, int] | None, int]] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)

    def on_result(self, camera: str, result: dict[str, Any], image: np.ndarray | None, roi: RoiBox | None = None) -> None:
        if image is not None:
            box = None
            if roi is not None:
                try:
                    box = roi(image.shape)
                except Exception:
                    box = None
            with self._new_frame:
                self._seq += 1
                self._frames[camera] = (image, result, box, self._seq)
                self._new_frame.notify_all()
        for ev in self.trackers[camera].update(result["label"], result["score"]):
            self._sighting(camera, ev)
        if self.mqtt is not None:
            self.mqtt.state(camera, result)

    def camera_ended(self, camera: str) -> None:
        for ev in self.trackers[camera].end():
            self._sighting(camera, ev)

    def close(self) -> None:
        for cam in self.cameras:
            self.camera_ended(cam)

    def _sighting(self, camera: str, ev: dict[str, Any]) -> None:
        with self._lock:
            if ev["type"] == "new":
                self._recent.appendleft(ev["after"])
            else:  # keep the newest view of the sighting in the list
                for i, s in enumerate(self._recent):
                    if s["id"] == ev["after"]["id"]:
                        self._recent[i] = ev["after"]
                        break
        if self.mqtt is not None:
            self.mqtt.event(camera, ev)

    def sightings(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    def jpeg(self, camera: str, after_seq: int = 0, timeout: float = 5.0, quality: int = 75) -> tuple[int, bytes] | None:
        """The camera's newest annotated frame as JPEG, waiting up to ``timeout`` for one newer than ``after_seq``."""
        import cv2

        from edgefg.runtime.sinks import annotate

        deadline = time.monotonic() + timeout
        with self._new_frame:
            while True:
                entry = self._frames.get(camera)
                if entry is not None and entry[3] > after_seq:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._new_frame.wait(left)
            image, result, box, seq = entry
            cached = self._jpeg.get(camera)
            if cached is not None and cached[0] == seq:
                return cached
        ok, buf = cv2.imencode(".jpg", annotate(image, result, box), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return None
        out = (seq, buf.tobytes())
        with self._lock:
            self._jpeg[camera] = out
        return out
