"""MQTT output with store-and-forward (paho-mqtt; ``pip install 'edgefg[mqtt]'``; imported lazily).

Topics (``prefix`` defaults to ``edgefg``), following Frigate's conventions:

``<prefix>/available``         ``online`` / ``offline``, retained; ``offline`` is also the last will
``<prefix>/<camera>/events``   sighting events ``{"type": "new"|"update"|"end", "before", "after", "seq", ...}``, QoS 1
``<prefix>/<camera>/state``    the current decision ``{"label", "score", "top", "ts"}``, retained, QoS 1
``homeassistant/sensor/<node>_<camera>/config``  Home Assistant discovery of each camera's "species" sensor, retained

Events go through a bounded SQLite :class:`~edgefg.runtime.outputs.spool.Spool` and each is deleted only
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

Nothing here stops the camera. Topic options are checked against the MQTT rules when
:class:`MqttOptions` is made (a bad one is an :class:`~edgefg.errors.EdgefgError`: one line, exit 2).
A disk error in the spool drops the event and counts it (see :mod:`edgefg.runtime.outputs.spool`). An
exception in paho's network thread (raised by paho or by one of the callbacks) is reported as an
``mqtt_client_failed`` event, ``stats()`` says ``healthy: false`` and ``connected: false``, and the
connection is started again after 1 s (doubling to 30 s while it keeps failing); so is an exception in
the sender thread. ``healthy`` is true again after the next successful connect.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgefg.errors import EdgefgError, InputPathError, MissingDependencyError
from edgefg.runtime.capture.sources import redact
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.spool import Spool

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOPIC_LEVEL = re.compile(r"^[^#+/\x00]+(/[^#+/\x00]+)*$")
NODE_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # Home Assistant's rule for a discovery node id
MAX_TOPIC_BYTES = 65535  # MQTT 3.1.1/5: a topic is a UTF-8 string of at most 65,535 bytes (also a client id)
TOPIC_ROOM = 512  # bytes a prefix leaves for what edgefg adds: "/<camera>/<name>", "/<component>/<node>_<camera>/<object>/config"
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0  # restarting a failed network or sender thread: after this long, doubling
FAIL_EVENT_EVERY_S = 60.0  # at most one mqtt_client_failed event a minute per thread (each failure is counted)
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
        check_prefix(self.prefix, "--mqtt-prefix", "e.g. edgefg or farm/edgefg")
        if self.discovery_prefix is not None:
            check_prefix(self.discovery_prefix, "--mqtt-discovery-prefix", "e.g. homeassistant (or 'none' for no discovery)")
        if not NODE_ID.match(self.node_id or ""):
            raise EdgefgError(f"bad MQTT node id '{shown(self.node_id)}'", "use letters, digits, '_' or '-' (it becomes a Home Assistant discovery topic level)")
        if self.client_id is not None:
            why = text_problem(self.client_id)
            if why:
                raise EdgefgError(f"bad MQTT client id '{shown(self.client_id)}': {why}", "use letters, digits, '_' or '-'")

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")


def shown(value: str, limit: int = 60) -> str:
    """``value`` for an error line: shortened, control characters escaped."""
    cut = value if len(value) <= limit else value[: limit - 3] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def text_problem(text: str) -> str | None:
    """Why ``text`` is not an MQTT UTF-8 string a broker accepts (MQTT 5 §1.5.4; mosquitto disconnects a
    client that sends one), or None: at most 65,535 bytes, no NUL, control characters, surrogates or
    non-characters."""
    if not text:
        return "it is empty"
    try:
        n = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if n > MAX_TOPIC_BYTES:
        return f"it is {n:,} UTF-8 bytes, MQTT allows {MAX_TOPIC_BYTES:,}"
    for c in text:
        o = ord(c)
        if o == 0:
            return "it holds a NUL character"
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return f"it holds the control character U+{o:04X}"
        if 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFF) >= 0xFFFE:
            return f"it holds the non-character U+{o:04X}"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (an MQTT topic name: no wildcards, see :func:`text_problem`), or None."""
    why = text_problem(topic)
    if why:
        return why
    if "+" in topic or "#" in topic:
        return "it holds the wildcard '+' or '#' (only a subscription may)"
    return None


def check_prefix(prefix: str, flag: str, example: str) -> None:
    """A topic prefix: a valid topic name without empty levels, not starting with '$' (the broker's own
    topics, e.g. $SYS), short enough to leave room for what edgefg adds. An EdgefgError if not."""
    why = topic_problem(prefix)
    if why is None:
        n = len(prefix.encode("utf-8"))
        if prefix.startswith("$"):
            why = "a topic starting with '$' is the broker's (e.g. $SYS): subscribers to '#' never see it"
        elif not TOPIC_LEVEL.match(prefix):
            why = "it has an empty level (a leading, trailing or double '/')"
        elif n > MAX_TOPIC_BYTES - TOPIC_ROOM:
            why = f"it is {n:,} UTF-8 bytes: with the levels edgefg adds, a topic must stay within MQTT's {MAX_TOPIC_BYTES:,}"
    if why:
        raise EdgefgError(f"bad {flag} '{shown(prefix)}': {why}", f"use topic levels without '+', '#', '$' or empty levels, {example}")


_GUARDED: dict[Any, Any] = {}


def guarded_client_class(mqtt: Any) -> Any:
    """paho's ``Client`` whose network loop hands an exception (raised in paho or in one of the
    callbacks, which paho re-raises) to ``on_loop_error`` and ends, instead of dying with a traceback on
    stderr while the rest of the run looks healthy."""
    cls = _GUARDED.get(mqtt.Client)
    if cls is None:
        class GuardedClient(mqtt.Client):  # type: ignore[misc, valid-type]
            on_loop_error: Any = None

            def loop_forever(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return super().loop_forever(*args, **kwargs)
                except Exception as exc:
                    handler = self.on_loop_error
                    if handler is None:
                        raise
                    handler(exc)
                    return mqtt.MQTT_ERR_UNKNOWN

        cls = _GUARDED[mqtt.Client] = GuardedClient
    return cls


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
        for cam in self.cameras:  # what the options allowed, with the camera names: every topic within the MQTT rules
            for t in (self.topic("available"), self.topic(cam, "events"), self.topic(cam, "state"),
                      *([self._discovery_topic(cam)] if opts.discovery_prefix else [])):
                why = topic_problem(t)
                if why:
                    raise EdgefgError(f"bad MQTT topic '{shown(t)}' (camera '{shown(cam)}'): {why}", "check --mqtt-prefix, --mqtt-discovery-prefix and the camera names")
        auth = read_auth(opts)
        self.spool = Spool(spool, opts.spool_max, events=self.events)
        self._mqtt = mqtt
        self.client = guarded_client_class(mqtt)(mqtt.CallbackAPIVersion.VERSION2, client_id=opts.client_id or f"edgefg-{opts.node_id}", clean_session=True)
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
        self.client.on_loop_error = self._on_loop_error
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
        self.client_errors = 0  # exceptions in paho's network thread, the callbacks or the sender (this run)
        self.restarts = 0  # network loop restarts after such an exception
        self.last_error: str | None = None
        self._problems: dict[str, str] = {}  # thread → what is wrong with it now ("network", "sender")
        self._fail_event_at: dict[str, float] = {}
        self._net_dead = False
        self._net_backoff = RETRY_MIN_S
        self._net_restart_at = 0.0
        self._started = False
        self._bad_topics: set[str] = set()
        self._final: dict[str, Any] | None = None
        self._sender = threading.Thread(target=self._send_loop, name="edgefg-mqtt", daemon=True)

    def topic(self, *levels: str) -> str:
        return "/".join((self.prefix, *levels))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive_s)
        self.client.loop_start()
        self._started = True
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

    # -- a failed thread: surfaced, then started again ---------------------------------------------
    def _fail(self, thread: str, exc: BaseException, action: str) -> None:
        """Count an exception in one of the client's threads, mark the publisher unhealthy, say so (an
        event at most once a minute per thread)."""
        where = ""
        tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
        if tb:
            where = f" (in {tb[-1].name})"
        message = f"{type(exc).__name__}: {exc}{where}"
        now = time.monotonic()
        with self._cond:
            self.client_errors += 1
            self.last_error = f"{thread}: {message}"
            self._problems[thread] = message
            emit = now - self._fail_event_at.get(thread, -1e18) >= FAIL_EVENT_EVERY_S
            if emit:
                self._fail_event_at[thread] = now
            errors = self.client_errors
        if emit:
            try:
                self.events.emit("mqtt_client_failed", thread=thread, error=message, errors=errors, action=action,
                                 broker=f"{self.opts.host}:{self.opts.port}")
            except Exception:
                pass

    def _on_loop_error(self, exc: BaseException) -> None:
        """paho's network thread is ending on an exception: nothing is sent until it is started again."""
        with self._cond:
            self._connected = False
            self._hold = True  # after the restart, paho's resends first (as after a reconnect)
            self._net_dead = True
            backoff = self._net_backoff
            self._net_backoff = min(RETRY_MAX_S, backoff * 2)
            self._net_restart_at = time.monotonic() + backoff
            self._cond.notify_all()
        self._fail("network", exc, f"reconnecting in {backoff:g} s; events stay spooled")

    def _restart_network(self) -> None:
        """(sender thread) Start paho's network thread again, on a fresh connection."""
        with self._cond:
            self._net_dead = False
        try:
            self.client.reconnect()  # a fresh connection: the callback that failed runs again
        except Exception:  # the broker is away (or it fails again): the network loop retries
            pass
        if self._stop.is_set():
            return
        if self.client.loop_start() != self._mqtt.MQTT_ERR_SUCCESS:  # the old thread has not quite ended yet
            with self._cond:
                self._net_dead = True
                self._net_restart_at = time.monotonic() + 0.05
            return
        self.restarts += 1

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
            self._problems.pop("network", None)
            self._net_backoff = RETRY_MIN_S
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
    def event(self, camera: str, event: dict[str, Any]) -> int | None:
        """Spool a sighting event for ``<prefix>/<camera>/events``; returns its seq (None: a disk error
        dropped it, counted in the spool's stats)."""
        seq = self.spool.put(self.topic(camera, "events"), json.dumps(event, separators=(",", ":"), default=str).encode())
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
            self._publish_now(self.topic(camera, "state"), payload)

    def _publish_now(self, topic: str, payload: bytes) -> None:
        """A retained latest value, from the pipeline's thread: an exception here is surfaced, never raised."""
        if topic in self._bad_topics:
            return
        why = topic_problem(topic)
        if why:
            self._bad_topics.add(topic)
            self.events.emit("mqtt_bad_topic", topic=shown(topic, 200), error=why, action="not published")
            return
        try:
            self.client.publish(topic, payload, qos=1, retain=True)
        except Exception as exc:
            self._fail("publish", exc, "this value is sent again on the next reconnect")

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def healthy(self) -> bool:
        """False while a thread of the client failed (an exception in paho's network loop, a callback or
        the sender) and has not worked again since; a broker that is away is not unhealthy."""
        with self._cond:
            problems = bool(self._problems) or self._net_dead
        return not problems and (not self._started or self._sender.is_alive() or self._stop.is_set())

    def stats(self) -> dict[str, Any]:
        """``connected``, ``healthy``, the spool (depth, ``spool_dropped`` = full-spool drops + disk-error
        drops, and the spool's own counters, see :meth:`Spool.stats`), ``published``, ``connects``,
        ``inflight``, ``client_errors``, ``restarts`` (and ``last_error``)."""
        if self._final is not None:
            return self._final
        s = {"connected": self._connected, "healthy": self.healthy, "spool_depth": self.spool.depth, "spool_dropped": self.spool.dropped,
             "published": self.published, "connects": self.connects, "inflight": self._inflight_n, "client_errors": self.client_errors,
             "restarts": self.restarts, **self.spool.stats()}
        if self.last_error:
            s["last_error"] = self.last_error
        return s

    def metrics(self) -> list[tuple[str, str, str, list[tuple[dict[str, Any], float]]]]:
        """Prometheus metrics beyond the ones ``httpd.prometheus_text`` makes of ``stats()`` (connected,
        spool depth and drops, published, in flight), in the field outputs' form (edgefg.runtime.outputs.contract.Metric)."""
        st = self.stats()
        return [
            ("mqtt_healthy", "gauge", "0 while a thread of the MQTT client failed (network loop, callback, sender) and has not recovered.", [({}, 1 if st["healthy"] else 0)]),
            ("mqtt_client_errors_total", "counter", "Exceptions in the MQTT client's threads (each one restarts that thread).", [({}, st["client_errors"])]),
            ("mqtt_spool_ok", "gauge", "0 from a spool disk error until a write works again.", [({}, 1 if st["spool_ok"] else 0)]),
            ("mqtt_spool_dropped_events_total", "counter", "Events the spool dropped: full (oldest first) or a disk error.",
             [({"reason": "full"}, st["spool_dropped_full"]), ({"reason": "disk_error"}, st["spool_dropped_disk"])]),
            ("mqtt_spool_errors_total", "counter", "Failed spool operations (a full or failing disk).", [({}, st["spool_errors"])]),
            ("mqtt_spool_damaged_total", "counter", "Damaged spool files set aside and recreated.", [({}, st["spool_damaged"])]),
        ]

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
        acks: list[int] = []  # acknowledged by the broker, not yet deleted from the spool
        first_ack = 0.0
        ack_retry_at = 0.0  # after a disk error the spool kept them: try again from then
        backoff = RETRY_MIN_S
        mqtt = self._mqtt
        while True:
            try:
                with self._cond:
                    mids = [self._acked.popleft() for _ in range(len(self._acked))]
                    restart = self._net_dead and time.monotonic() >= self._net_restart_at
                stopping = self._stop.is_set()
                for mid in mids:
                    seq = inflight.pop(mid, None)
                    if seq is not None:  # other mids: state, availability, discovery
                        if not acks:
                            first_ack = time.monotonic()
                        acks.append(seq)
                        self.published += 1  # what the broker acknowledged
                now = time.monotonic()
                if acks and now >= ack_retry_at and (stopping or not inflight or len(acks) >= self.ACK_BATCH or now - first_ack >= self.ACK_FLUSH_S):
                    if self.spool.ack_many(acks) is None:  # a disk error: the rows stay (sent again after a restart at worst)
                        ack_retry_at = now + 0.5
                    else:  # rows the full-spool trimming already dropped are not counted again
                        acks.clear()
                        with self._cond:
                            self._cond.notify_all()  # close() waits on the depth
                self._inflight_n = len(inflight)
                if stopping:
                    return  # what is not acknowledged stays in the spool for next time
                if restart:
                    self._restart_network()
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
                        except (ValueError, RuntimeError, UnicodeError) as exc:  # a bad topic in an old spool: give it up
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
                if self._problems.get("sender"):
                    with self._cond:
                        self._problems.pop("sender", None)  # a whole round without an exception
                    backoff = RETRY_MIN_S
                with self._cond:
                    if self._acked or self._stop.is_set():
                        continue
                    if sent and len(inflight) < window:
                        continue  # the spool may hold more
                    timeout = 0.5
                    if acks:
                        timeout = max(0.0, max(first_ack + self.ACK_FLUSH_S, ack_retry_at) - time.monotonic())
                    if self._net_dead:
                        timeout = min(timeout, max(0.0, self._net_restart_at - time.monotonic()))
                    self._cond.wait(timeout)
            except Exception as exc:  # a bug or an unforeseen failure: say so, wait, go on (never die silently)
                self._fail("sender", exc, f"sending again in {backoff:g} s; events stay spooled")
                if self._stop.wait(backoff):
                    return
                backoff = min(RETRY_MAX_S, backoff * 2)

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
        if topic_problem(topic):
            self._publish_now(topic, data)  # reported once, never stored (every reconnect would fail on it)
            return
        self._extra_retained[topic] = data
        if self._connected:
            self._publish_now(topic, data)

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
        if topic_problem(topic):
            self._publish_now(topic, data)  # reported once, never stored
            return
        self._extra_retained[topic] = data
        if self._connected:
            self._publish_now(topic, data)
