"""MQTT output with store-and-forward (paho-mqtt; ``pip install 'edgefg[mqtt]'``; imported lazily).

Topics (``prefix`` defaults to ``edgefg``), following Frigate's conventions:

``<prefix>/available``         ``online`` / ``offline``, retained; ``offline`` is also the last will
``<prefix>/<camera>/events``   sighting events ``{"type": "new"|"update"|"end", "before", "after", "seq", ...}``, QoS 1
``<prefix>/<camera>/state``    the current decision ``{"label", "score", "top", "ts"}``, retained, QoS 1
``homeassistant/sensor/<node>_<camera>/config``  Home Assistant discovery of each camera's "species" sensor, retained

Events go through a bounded SQLite :class:`~edgefg.runtime.spool.Spool` and leave one at a time,
each deleted only after the broker's PUBACK: while the broker is away they wait on disk, in order,
across broker restarts and edgefg restarts. QoS 1 is at-least-once: a message whose PUBACK was lost
to a crash is sent again, and consumers drop it by ``seq``. State is latest-value (not spooled): it is
re-published on every (re)connect. Credentials and TLS come from a file or environment variables,
never from the command line.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
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

    def __post_init__(self) -> None:
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
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._cond = threading.Condition()
        self._connected = False
        self._stop = threading.Event()
        self._states: dict[str, bytes] = {}
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

    def close(self, drain_s: float = 2.0) -> None:
        """Send what can be sent within ``drain_s``, announce ``offline``, disconnect. What is left stays spooled."""
        deadline = time.monotonic() + drain_s
        while self._connected and self.spool.depth and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._sender.join(2)
        if self._connected:
            try:
                self.client.publish(self.topic("available"), "offline", qos=1, retain=True).wait_for_publish(1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self._final = self.stats()
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
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self.events.emit("mqtt_connected", broker=f"{self.opts.host}:{self.opts.port}", spooled=self.spool.depth)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected
        with self._cond:
            self._connected = False
        if was and not self._stop.is_set():
            self.events.emit("mqtt_disconnected", broker=f"{self.opts.host}:{self.opts.port}", reason=str(reason_code))

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
                "published": self.published, "connects": self.connects}

    # -- store-and-forward ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and not self._connected:
                    self._cond.wait(0.5)
            if self._stop.is_set():
                return
            rows = self.spool.peek(1)
            if not rows:
                with self._cond:
                    self._cond.wait(0.5)
                continue
            seq, topic, payload, retain = rows[0]
            body = payload
            try:  # the spool's seq goes into the JSON so consumers can drop a resent duplicate
                obj = json.loads(payload)
                if isinstance(obj, dict):
                    body = json.dumps({**obj, "seq": seq}, separators=(",", ":")).encode()
            except ValueError:
                pass
            info = self.client.publish(topic, body, qos=1, retain=retain)
            # paho keeps an unacknowledged QoS 1 message and resends it after a reconnect: wait for the PUBACK
            while not info.is_published():
                if self._stop.is_set():
                    return  # not acknowledged: stays in the spool for next time
                time.sleep(0.005)
            self.spool.ack(seq)
            self.published += 1

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
