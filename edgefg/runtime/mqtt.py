"""MQTT output with store-and-forward (paho-mqtt; ``pip install 'edgefg[mqtt]'``; imported lazily).

Topics (``prefix`` defaults to ``edgefg``), following Frigate's conventions:

``<prefix>/available``         ``online`` / ``offline``, retained; ``offline`` is also the last will
``<prefix>/<camera>/events``   sighting events ``{"type": "new"|"update"|"end", "before", "after", "seq", ...}``, QoS 1
``<prefix>/<camera>/state``    the current decision ``{"label", "score", "top", "ts"}``, retained, QoS 1
``homeassistant/sensor/<node>_<camera>/config``  Home Assistant discovery of each camera's "species" sensor, retained

Events go through a bounded SQLite :class:`~edgefg.runtime.spool.Spool` and each is deleted only
after the broker's PUBACK: while the broker is away they wait on disk, in order, across broker
restarts and edgefg restarts. QoS 1 is at-least-once: a message whose PUBACK was lost (to a dropped
connection or a crash) is sent again, and consumers drop it by ``seq`` (injected into the JSON).

Throughput: up to ``MqttOptions.inflight`` (256) events are outstanding at once (sent, PUBACK not yet
back) on the one connection, so the rate is not one round trip per event. paho writes them in order
on one connection, so each camera's events arrive in order. PUBACKs come back through ``on_publish``
(no polling) and the acknowledged rows are deleted from the spool in batches (one transaction per
≤ 256 acks or 5 ms): a crash before such a commit resends those few already-delivered events on the
next start, as does a close() that gives up with events in flight — allowed under at-least-once.
After a reconnect paho resends the unacknowledged messages itself (marked DUP); the sender sends
nothing newer until those are acknowledged, so a reconnect can cause duplicates of the window that
was in flight, but never reorders and never skips a seq. With
``inflight=1`` it is one message per round trip (kept for comparison, see ``benchmarks/mqtt_throughput.py``).
The guarantee ends at the broker's PUBACK: a broker drops QoS 1 messages for a subscriber that lags
too far (mosquitto: ``max_queued_messages``, default 1000), so size that for consumers slower than us.

At exit :meth:`MqttPublisher.close` drains: while connected and the spool is not empty it keeps
sending, for at most ``drain_s`` seconds; ``stats()`` then reports ``drained``, ``left_in_spool``,
``drain_s`` and ``drain_deadline_hit``. What is left stays spooled for the next start.

State is latest-value (not spooled): it is re-published on every (re)connect. Credentials and TLS
come from a file or environment variables, never from the command line.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgefg.errors import EdgefgError, InputPathError, MissingDependencyError
from edgefg.runtime.events import EventLog
from edgefg.runtime.sources import redact
from edgefg.runtime.spool import Spool

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOPIC_LEVEL = re.compile(r"^[^#+/\x00]+(/[^#+/\x00]+)*$")
ENV_USERNAME, ENV_PASSWORD, ENV_AUTH_FILE = "EDGEFG_MQTT_USERNAME", "EDGEFG_MQTT_PASSWORD", "EDGEFG_MQTT_AUTH_FILE"


@dataclass
class MqttOptions:
    """Where and how to publish. ``url`` is ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (TLS)."""

    url: str
    prefix: str = "edgefg"
    discovery_prefix: str | None = "homeassistant"  # None: no Home Assistant discovery
    node_id: str = field(default_factory=lambda: re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "edgefg")
    client_id: str | None = None  # default: edgefg-<node_id>
    spool_path: Path | None = None  # default: ~/.cache/edgefg/mqtt-<node_id>.sqlite
    spool_max: int = 100_000
    auth_file: Path | None = None  # TOML: username, password, ca_file, cert_file, key_file, tls_insecure
    keepalive_s: int = 30
    state_every_s: float = 0.0  # also re-publish an unchanged state this often (0 = only on change)
    inflight: int = 256  # events sent but not yet acknowledged, at most (1 = one at a time, the old behaviour)
    drain_s: float = 5.0  # close(): keep sending the spool this long at most while connected

    def __post_init__(self) -> None:
        if int(self.inflight) < 1:
            raise EdgefgError(f"the MQTT in-flight window must be ≥ 1, got {self.inflight}")
        if self.drain_s < 0:
            raise EdgefgError(f"the MQTT drain time must be ≥ 0, got {self.drain_s}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise EdgefgError(f"bad --mqtt URL '{redact(self.url)}'", "use mqtt://HOST:PORT (or mqtts://HOST:PORT for TLS)")
        if parts.username or parts.password:
            raise EdgefgError("--mqtt must not carry credentials (they would show in the process list)",
                              f"put username/password in a file given with --mqtt-auth, or set {ENV_USERNAME}/{ENV_PASSWORD}")
        try:
            self.port = parts.port or (8883 if self.tls else 1883)
        except ValueError:
            raise EdgefgError(f"bad port in --mqtt URL '{self.url}'") from None
        self.host = parts.hostname
        if not TOPIC_LEVEL.match(self.prefix):
            raise EdgefgError(f"bad --mqtt-prefix '{self.prefix}'", "use topic levels without '+', '#' or empty levels, e.g. edgefg or farm/edgefg")

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")


def read_auth(opts: MqttOptions) -> dict[str, Any]:
    """Credentials/TLS settings from ``--mqtt-auth FILE`` (or $EDGEFG_MQTT_AUTH_FILE), then the
    environment (``EDGEFG_MQTT_USERNAME``/``EDGEFG_MQTT_PASSWORD`` override the file)."""
    auth: dict[str, Any] = {}
    path = opts.auth_file or (Path(os.environ[ENV_AUTH_FILE]) if os.environ.get(ENV_AUTH_FILE) else None)
    if path is not None:
        if not Path(path).is_file():
            raise InputPathError(f"MQTT auth file '{path}' does not exist")
        try:
            auth = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EdgefgError(f"MQTT auth file '{path}' is not valid TOML: {exc}") from None
        known = {"username", "password", "ca_file", "cert_file", "key_file", "tls_insecure"}
        unknown = set(auth) - known
        if unknown:
            raise EdgefgError(f"MQTT auth file '{path}': unknown keys {sorted(unknown)}", f"known keys: {', '.join(sorted(known))}")
    if os.environ.get(ENV_USERNAME):
        auth["username"] = os.environ[ENV_USERNAME]
    if os.environ.get(ENV_PASSWORD):
        auth["password"] = os.environ[ENV_PASSWORD]
    for key in ("ca_file", "cert_file", "key_file"):
        if key in auth and not Path(auth[key]).is_file():
            raise InputPathError(f"MQTT auth: {key} '{auth[key]}' does not exist")
    return auth


class MqttPublisher:
    """Publishes availability, per-camera state, discovery and (spooled) sighting events."""

    HEADROOM = 512  # paho queue slots beyond the event window (state, availability, discovery)
    ACK_BATCH = 256  # commit acknowledged rows when this many are pending ...
    ACK_FLUSH_S = 0.005  # ... or the oldest pending one is this old (or nothing is in flight)

    def __init__(self, opts: MqttOptions, cameras: list[str], events: EventLog | None = None, device: dict[str, Any] | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError.for_module("paho-mqtt", "mqtt") from None
        self.opts = opts
        self.cameras = list(cameras)
        self.events = events or EventLog()
        self.device = device or {}
        self.prefix = opts.prefix.rstrip("/")
        spool = opts.spool_path or Path.home() / ".cache" / "edgefg" / f"mqtt-{opts.node_id}.sqlite"
        self.spool = Spool(spool, opts.spool_max)
        auth = read_auth(opts)
        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=opts.client_id or f"edgefg-{opts.node_id}", clean_session=True)
        if auth.get("username"):
            self.client.username_pw_set(str(auth["username"]), str(auth.get("password", "")) or None)
        if opts.tls or auth.get("ca_file") or auth.get("cert_file"):
            try:
                self.client.tls_set(ca_certs=auth.get("ca_file"), certfile=auth.get("cert_file"), keyfile=auth.get("key_file"))
                if auth.get("tls_insecure"):
                    self.client.tls_insecure_set(True)
            except (OSError, ValueError) as exc:
                raise EdgefgError(f"MQTT TLS setup failed: {exc}", "check ca_file/cert_file/key_file in the --mqtt-auth file") from None
        self.client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        # paho's own in-flight limit must not throttle our window: 0 = no limit (≥ inflight). With a limit paho
        # also rescans its whole message dict on every PUBACK, and queues what is over it. Our events never
        # exceed the window, so paho's queue bound only caps state/availability/discovery messages beyond it.
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(int(opts.inflight) + self.HEADROOM)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # Never call into paho while holding _cond: paho calls on_publish with its own lock held.
        self._cond = threading.Condition()
        self._acked: deque[int] = deque()  # mids from on_publish, consumed by the sender
        self._hold = False  # after a reconnect: send nothing new until paho's resends are acknowledged
        self._inflight_n = 0
        self._connected = False
        self._stop = threading.Event()
        self._states: dict[str, bytes] = {}
        self._extra_retained: dict[str, bytes] = {}  # topic → payload (publish_retained, add_discovery)
        self._state_sent: dict[str, float] = {}
        self.published = 0
        self.connects = 0
        self._final: dict[str, Any] | None = None
        self._sender = threading.Thread(target=self._send_loop, name="edgefg-mqtt", daemon=True)

    def topic(self, *levels: str) -> str:
        return "/".join((self.prefix, *levels))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "MqttPublisher":
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive_s)
        self.client.loop_start()
        self._sender.start()
        return self

    def close(self, drain_s: float | None = None) -> None:
        """Send what can be sent within ``drain_s`` (default ``MqttOptions.drain_s``) while connected,
        announce ``offline``, disconnect. What is left stays spooled for the next start."""
        if self._final is not None:
            return
        drain_s = self.opts.drain_s if drain_s is None else drain_s
        t0 = time.monotonic()
        deadline = t0 + drain_s
        published0 = self.published
        with self._cond:
            while self._connected and self.spool.depth and self._sender.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        hit = bool(self._connected and self.spool.depth and time.monotonic() >= deadline)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._sender.join(2)
        drain = {"drained": self.published - published0, "left_in_spool": self.spool.depth,
                 "drain_s": round(time.monotonic() - t0, 3), "drain_deadline_hit": hit}
        if self._connected:
            try:
                self.client.publish(self.topic("available"), "offline", qos=1, retain=True).wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self._final = {**self.stats(), **drain}
        self.spool.close()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.events.emit("mqtt_refused", broker=f"{self.opts.host}:{self.opts.port}", reason=str(reason_code))
            return
        self.connects += 1
        client.publish(self.topic("available"), "online", qos=1, retain=True)
        if self.opts.discovery_prefix:
            for cam in self.cameras:
                client.publish(self._discovery_topic(cam), json.dumps(self._discovery(cam)), qos=1, retain=True)
        for cam, payload in list(self._states.items()):
            client.publish(self.topic(cam, "state"), payload, qos=1, retain=True)
        for topic, data in list(self._extra_retained.items()):  # field outputs' retained topics and discovery
            client.publish(topic, data, qos=1, retain=True)
        with self._cond:
            self._connected = True
            if self.connects > 1:
                self._hold = True
            self._cond.notify_all()
        self.events.emit("mqtt_connected", broker=f"{self.opts.host}:{self.opts.port}", spooled=self.spool.depth)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected
        with self._cond:
            self._connected = False
            self._hold = True
            self._cond.notify_all()
        if was and not self._stop.is_set():
            self.events.emit("mqtt_disconnected", broker=f"{self.opts.host}:{self.opts.port}", reason=str(reason_code))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # network thread, paho's message lock held: only hand the mid over (events and the rest alike)
        with self._cond:
            self._acked.append(mid)
            self._cond.notify_all()

    # -- what the pipeline calls ----------------------------------------------------------------
    def event(self, camera: str, event: dict[str, Any]) -> int:
        """Spool a sighting event for ``<prefix>/<camera>/events``; returns its seq."""
        seq = self.spool.put(self.topic(camera, "events"), json.dumps(event, separators=(",", ":")).encode())
        with self._cond:
            self._cond.notify_all()
        return seq

    def state(self, camera: str, result: dict[str, Any]) -> None:
        """The camera's current decision (retained); sent when the label changes or every ``state_every_s``."""
        payload = json.dumps({"label": result["label"], "score": result["score"], "top": result.get("top", []),
                              "ts": round(time.time(), 3)}, separators=(",", ":")).encode()
        now = time.monotonic()
        every = self.opts.state_every_s
        if not (result.get("changed") or camera not in self._states or (every and now - self._state_sent.get(camera, 0) >= every)):
            return
        self._states[camera] = payload
        self._state_sent[camera] = now
        if self._connected:
            self.client.publish(self.topic(camera, "state"), payload, qos=1, retain=True)

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        return {"connected": self._connected, "spool_depth": self.spool.depth, "spool_dropped": self.spool.dropped,
                "published": self.published, "connects": self.connects, "inflight": self._inflight_n}

    # -- store-and-forward ------------------------------------------------------------------------
    @staticmethod
    def _with_seq(payload: bytes, seq: int) -> bytes:
        """The event's JSON with its spool seq added, so consumers can drop a resent duplicate."""
        if payload[:1] == b"{" and payload[-1:] == b"}" and payload != b"{}" and b'"seq"' not in payload:
            return payload[:-1] + b',"seq":%d}' % seq  # our own compact JSON: no need to parse it
        try:
            obj = json.loads(payload)
        except ValueError:
            return payload
        if isinstance(obj, dict):
            return json.dumps({**obj, "seq": seq}, separators=(",", ":")).encode()
        return payload

    def _send_loop(self) -> None:
        window = int(self.opts.inflight)
        refill_at = max(1, window // 8)  # read ahead when this many slots are free (fewer, larger spool reads)
        inflight: dict[int, int] = {}  # paho mid -> spool seq, this thread only
        last = 0  # the highest seq handed to paho
        acks: list[int] = []
        first_ack = 0.0
        mqtt = self._mqtt
        try:
            while True:
                with self._cond:
                    mids = [self._acked.popleft() for _ in range(len(self._acked))]
                stopping = self._stop.is_set()
                for mid in mids:
                    seq = inflight.pop(mid, None)
                    if seq is not None:  # other mids: state, availability, discovery
                        if not acks:
                            first_ack = time.monotonic()
                        acks.append(seq)
                if acks and (stopping or not inflight or len(acks) >= self.ACK_BATCH or time.monotonic() - first_ack >= self.ACK_FLUSH_S):
                    self.spool.ack_many(acks)  # rows the full-spool trimming already dropped are not counted again
                    self.published += len(acks)  # what the broker acknowledged
                    acks.clear()
                    with self._cond:
                        self._cond.notify_all()  # close() waits on the depth
                self._inflight_n = len(inflight)
                if stopping:
                    return  # what is not acknowledged stays in the spool for next time
                with self._cond:
                    if self._hold and not inflight:
                        self._hold = False  # paho's resends are all acknowledged: go on with newer rows
                    can_send = self._connected and not self._hold
                free = window - len(inflight)
                sent = 0
                if can_send and (free >= refill_at or not inflight):
                    for seq, topic, payload, retain in self.spool.peek(free, after=last):
                        try:
                            info = self.client.publish(topic, self._with_seq(payload, seq), qos=1, retain=retain)
                        except (ValueError, RuntimeError) as exc:  # a bad topic in an old spool: give it up
                            self.events.emit("mqtt_bad_message", seq=seq, error=str(exc))
                            self.spool.ack_many([seq])
                            last = seq
                            continue
                        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                            break  # paho refused it (queue full): the row stays, try again shortly
                        inflight[info.mid] = seq  # NO_CONN too: paho keeps it and sends it on reconnect, in order
                        last = seq
                        sent += 1
                    self._inflight_n = len(inflight)
                with self._cond:
                    if self._acked or self._stop.is_set():
                        continue
                    if sent and len(inflight) < window:
                        continue  # the spool may hold more
                    timeout = 0.5
                    if acks:
                        timeout = max(0.0, self.ACK_FLUSH_S - (time.monotonic() - first_ack))
                    self._cond.wait(timeout)
        except Exception as exc:  # e.g. the spool's disk failed: say so rather than die silently
            self.events.emit("mqtt_sender_failed", error=f"{type(exc).__name__}: {exc}")
            raise

    # -- Home Assistant discovery ----------------------------------------------------------------
    def _discovery_topic(self, camera: str) -> str:
        return f"{self.opts.discovery_prefix}/sensor/{self.opts.node_id}_{camera}/species/config"

    def _discovery(self, camera: str) -> dict[str, Any]:
        node = self.opts.node_id
        return {
            "name": "Species",
            "unique_id": f"edgefg_{node}_{camera}_species",
            "object_id": f"edgefg_{node}_{camera}_species",
            "state_topic": self.topic(camera, "state"),
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": self.topic(camera, "state"),
            "availability_topic": self.topic("available"),
            "payload_available": "online",
            "payload_not_available": "offline",
            "icon": "mdi:bird",
            "device": {"identifiers": [f"edgefg_{node}_{camera}"], "name": f"edgefg {camera}", "manufacturer": "edgefg",
                       "model": self.device.get("model", "edgefg"), "sw_version": self.device.get("sw_version", "")},
        }

    # -- extra retained topics and discovery (field outputs: drift, ...) ----------------------------------
    def publish_retained(self, camera: str, name: str, payload: dict[str, Any] | bytes | str) -> None:
        """Latest value on ``<prefix>/<camera>/<name>`` (retained, QoS 1, not spooled), re-published on
        every (re)connect like ``state``."""
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        topic = self.topic(camera, name)
        self._extra_retained[topic] = data
        if self._connected:
            self.client.publish(topic, data, qos=1, retain=True)

    def add_discovery(self, component: str, camera: str, object_id: str, config: dict[str, Any]) -> None:
        """Home Assistant discovery of one more entity of the camera's device (``component``: sensor,
        binary_sensor, ...), at ``<discovery>/<component>/<node>_<camera>/<object_id>/config``, retained and
        re-published on every (re)connect. unique_id, object_id, availability and device are filled in
        as for the species sensor. Nothing without a discovery prefix."""
        if not self.opts.discovery_prefix:
            return
        node = self.opts.node_id
        base = self._discovery(camera)
        uid = f"edgefg_{node}_{camera}_{object_id}"
        full = {"unique_id": uid, "object_id": uid, **{k: base[k] for k in ("availability_topic", "payload_available", "payload_not_available")},
                **config, "device": base["device"]}
        topic = f"{self.opts.discovery_prefix}/{component}/{node}_{camera}/{object_id}/config"
        data = json.dumps(full).encode()
        self._extra_retained[topic] = data
        if self._connected:
            self.client.publish(topic, data, qos=1, retain=True)
