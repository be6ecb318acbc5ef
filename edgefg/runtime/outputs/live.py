"""The live outputs: :class:`LiveOutputs` keeps each camera's newest frame + result (for the MJPEG stream
and the web page), its sighting tracker and the last sightings, and sends sighting events to MQTT;
:class:`MqttOutput` holds the MQTT connection (retained state per camera, the spooled events).

``serve`` calls :meth:`LiveOutputs.on_result` for every classified frame; HTTP threads read
:meth:`~LiveOutputs.jpeg` and :meth:`~LiveOutputs.sightings`. Frames are JPEG-encoded only when a stream asks for one.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import numpy as np

from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.loop.sightings import SightingTracker
from edgefg.runtime.outputs.contract import OutputBase
from edgefg.runtime.outputs.sighting_snapshots import SightingSnapshots

RoiBox = Callable[[tuple[int, ...]], tuple[int, int, int, int]]


def iso_utc(ts: float) -> str:
    """A Unix time as ISO 8601 UTC (Home Assistant's timestamp sensors parse this)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}+00:00"


class LiveOutputs(OutputBase):
    """The live state, a run output when ``--http`` or ``--mqtt`` is given; closes first: it ends the
    open sightings, whose ``end`` events MQTT still has to send."""

    name = "live"
    close_order = 0

    def __init__(self, cameras: list[str], events: EventLog, mqtt: Any = None, keep_sightings: int = 50,
                 update_every_s: float = 5.0, rois: dict[str, RoiBox | None] | None = None) -> None:
        self.cameras = list(cameras)
        self.events = events
        self.mqtt = mqtt
        self.rois = dict(rois or {})
        self.trackers = {c: SightingTracker(c, update_every_s=update_every_s) for c in cameras}
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep_sightings)
        self._frames: dict[str, tuple[np.ndarray, dict[str, Any], tuple[int, int, int, int] | None, int]] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self.snapshots = SightingSnapshots(keep=keep_sightings)
        self._counts: dict[str, Counter[str]] = {c: Counter() for c in cameras}
        if mqtt is not None:
            for cam in cameras:
                self._discovery(cam)

    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        image = frame.image
        roi = self.rois.get(camera)
        box = None
        if image is not None:
            if roi is not None:
                try:
                    box = roi(image.shape)
                except Exception:
                    box = None
            with self._new_frame:
                self._seq += 1
                self._frames[camera] = (image, result, box, self._seq)
                self._new_frame.notify_all()
        tracker = self.trackers[camera]
        events = tracker.update(result["label"], result["score"])
        ended = self.snapshots.close(camera) if any(ev["type"] == "end" for ev in events) else None
        if tracker.current is not None and image is not None:
            self.snapshots.offer(camera, tracker.current.id, float(result["score"]), image, result, box)
        for ev in events:
            self._sighting(camera, ev, ended if ev["type"] == "end" else self.snapshots.take(camera))

    def camera_ended(self, camera: str) -> None:
        events = self.trackers[camera].end()
        shot = self.snapshots.close(camera) if events else None
        for ev in events:
            self._sighting(camera, ev, shot)

    def close(self) -> None:
        for cam in self.cameras:
            self.camera_ended(cam)

    def abort(self) -> None:
        pass  # a run that failed ends no sighting

    def _sighting(self, camera: str, ev: dict[str, Any], shot: tuple[str, bytes] | None = None) -> None:
        with self._lock:
            if ev["type"] == "new":
                self._recent.appendleft(ev["after"])
                self._counts[camera][ev["after"]["label"]] += 1
            else:  # keep the newest view of the sighting in the list
                for i, s in enumerate(self._recent):
                    if s["id"] == ev["after"]["id"]:
                        self._recent[i] = ev["after"]
                        break
        if self.mqtt is not None:
            self.mqtt.event(camera, ev)
            after = ev["after"]
            seen = after["end_time"] if after.get("end_time") is not None else time.time()
            self.mqtt.publish_retained(camera, "last_seen", {"label": after["label"], "time": iso_utc(seen), "sighting": after["id"],
                                                             "best_score": after["best_score"]})
            if ev["type"] == "new":
                self.mqtt.publish_retained(camera, "counts", self.counts()[camera])
            if shot is not None:
                self.mqtt.publish_retained(camera, "snapshot", shot[1])

    def counts(self) -> dict[str, dict[str, Any]]:
        """Sightings per class and camera since the run started (``total``, ``by_class`` most seen first)."""
        with self._lock:
            return {cam: {"total": sum(c.values()), "by_class": dict(c.most_common())} for cam, c in self._counts.items()}

    def sighting_jpeg(self, sighting: str) -> bytes | None:
        """The best frame of a recent sighting (annotated JPEG), None when unknown or not kept any more."""
        return self.snapshots.jpeg(sighting)

    def sightings(self) -> list[dict[str, Any]]:
        """The recent sightings, newest first; an open one as it is now (frames, smoothed score), not as
        its last event left it. ``snapshot``: the path of its best frame, when one is kept."""
        open_now = {}
        for tracker in self.trackers.values():
            live = tracker.live()
            if live is not None:
                open_now[live["id"]] = live
        with self._lock:
            rows = [open_now.get(s["id"], s) for s in self._recent]
        return [{**r, "snapshot": "/snapshot.jpg?sighting=" + quote(r["id"])} if self.snapshots.has(r["id"]) else r for r in rows]

    def _discovery(self, camera: str) -> None:
        """Home Assistant entities beside the species sensor: confidence, last seen, sightings, the best snapshot."""
        m = self.mqtt
        m.add_discovery("sensor", camera, "confidence", {"name": "Confidence", "state_topic": m.topic(camera, "state"), "unit_of_measurement": "%",
                                                         "value_template": "{{ (value_json.score * 100) | round(1) }}", "state_class": "measurement",
                                                         "icon": "mdi:gauge"})
        m.add_discovery("sensor", camera, "last_seen", {"name": "Last seen", "state_topic": m.topic(camera, "last_seen"), "device_class": "timestamp",
                                                        "value_template": "{{ value_json.time }}", "json_attributes_topic": m.topic(camera, "last_seen")})
        m.add_discovery("sensor", camera, "sightings", {"name": "Sightings", "state_topic": m.topic(camera, "counts"), "state_class": "total_increasing",
                                                        "value_template": "{{ value_json.total }}", "json_attributes_topic": m.topic(camera, "counts"),
                                                        "json_attributes_template": "{{ value_json.by_class | tojson }}", "icon": "mdi:counter"})
        m.add_discovery("image", camera, "snapshot", {"name": "Snapshot", "image_topic": m.topic(camera, "snapshot"), "content_type": "image/jpeg"})

    def jpeg(self, camera: str, after_seq: int = 0, timeout: float = 5.0, quality: int = 75) -> tuple[int, bytes] | None:
        """The camera's newest annotated frame as JPEG, waiting up to ``timeout`` for one newer than ``after_seq``."""
        import cv2

        from edgefg.runtime.outputs.sinks import annotate

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


class MqttOutput(OutputBase):
    """``--mqtt``: the broker connection and its on-disk spool; each camera's decision as retained state.
    (Sighting events reach it through :class:`LiveOutputs`.) Closes after every output that publishes
    through it, draining the spool for ``--mqtt-drain`` seconds; after an error for 0.5 s."""

    name = "mqtt"
    close_order = 2

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher

    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        self.publisher.state(camera, result)

    def close(self) -> dict[str, Any]:
        self.publisher.close()
        return self.publisher.stats()

    def abort(self) -> None:
        self.publisher.close(drain_s=0.5)

    def stats(self) -> dict[str, Any]:
        return self.publisher.stats()  # also the HTTP server's "mqtt" section: /api/state, the page's header, /metrics (httpd.prometheus_text)

    def metrics(self) -> list[Any]:
        """The client's health and spool metrics beyond those ``prometheus_text`` makes of :meth:`stats`."""
        more = getattr(self.publisher, "metrics", None)
        return more() if more is not None else []


def open_mqtt(ctx: Any) -> MqttOutput | None:
    """The MQTT output, when ``--mqtt`` is given; sets ``ctx.mqtt`` for the outputs that publish through it."""
    if ctx.opts.mqtt is None:
        return None
    from edgefg import __version__
    from edgefg.runtime.outputs.mqtt import MqttPublisher

    ctx.mqtt = MqttPublisher(ctx.opts.mqtt, ctx.cameras, ctx.events, device={"model": ctx.info.get("name", "edgefg"), "sw_version": __version__}).start()
    return MqttOutput(ctx.mqtt)


def open_live(ctx: Any) -> LiveOutputs | None:
    """The live state, when the page (``--http``) or MQTT needs it."""
    if not ctx.opts.http and ctx.mqtt is None:
        return None
    return LiveOutputs(ctx.cameras, ctx.events, mqtt=ctx.mqtt, rois=ctx.rois)
