"""Optional HTTP endpoint (stdlib ``http.server`` on daemon threads):

``/``             the live page (self-contained; see :mod:`edgefg.runtime.outputs.webpage`)
``/stream.mjpg``  ``?camera=NAME``: the camera's annotated frames as MJPEG (``multipart/x-mixed-replace``)
``/snapshot.jpg`` ``?camera=NAME``: the newest annotated frame; ``?sighting=ID``: a recent sighting's best frame
``/api/state``    everything the page shows, as JSON
``/healthz``      200 ``{"status": "ok"|"degraded"}`` while frames arrive (degraded: some cameras are
                  stale), 503 when every camera has given no frame for ``stale_after_s`` (or the loop stopped)
``/latest``       the latest result as JSON (``?camera=NAME`` for one camera; 204 before the first frame)
``/metrics``      Prometheus text format (``edgefg_`` names, base units, per ``camera`` label)

Hardening: every connection has a socket timeout (a half-open client is dropped after ``timeout_s``),
at most ``max_connections`` requests are served at once, with ``HEALTH_RESERVE`` more slots that answer
only ``/healthz`` and ``/metrics`` (a watchdog is never starved into restarting a healthy camera), and
MJPEG streams on slots of their own (``max_streams``, default a quarter of ``max_connections``, at
least 2); over a cap, a 503 at once. With a token every path but ``/healthz`` needs
``Authorization: Bearer TOKEN`` (or ``?token=TOKEN``, which the page passes on to its streams); without
one, a request whose ``Host`` is not this machine (an IP, localhost, its names) is refused (DNS
rebinding). Every answer says ``nosniff`` and ``no-referrer``. Binding a non-loopback address without a
token is allowed but warned about.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from edgefg.errors import EdgefgError, InputPathError
from edgefg.runtime.loop.events import EventLog
from edgefg.runtime.outputs.contract import OutputBase


def parse_address(text: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``port`` → (host, port); host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":") if ":" in text else ("", "", text)
    try:
        p = int(port)
        if not 0 <= p < 65536:
            raise ValueError
    except ValueError:
        raise EdgefgError(f"bad --http address '{text}'", "use HOST:PORT, e.g. 127.0.0.1:8080 (0.0.0.0:8080 to listen on all interfaces)") from None
    return (host.strip("[]") or "127.0.0.1"), p


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (first line, stripped); a missing, empty or short token is an error."""
    p = Path(path)
    if not p.is_file():
        raise InputPathError(f"--http-token-file '{p}' does not exist")
    try:
        text = p.read_text(encoding="utf-8").strip()
        token = text.splitlines()[0].strip() if text else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgefgError(f"cannot read --http-token-file '{p}': {exc}") from None
    if len(token) < 16:
        raise EdgefgError(f"the token in '{p}' is {'empty' if not token else 'shorter than 16 characters'}",
                          "write a long random token into it, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HEALTH_RESERVE = 4  # connections beyond the cap that may only ask /healthz or /metrics (a watchdog is never starved)
HEALTH_PATHS = ("/healthz", "/metrics")
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with three pools of connection slots: ``max_connections`` for requests,
    ``HEALTH_RESERVE`` more that serve only :data:`HEALTH_PATHS`, and ``max_streams`` for MJPEG streams
    (a stream hands its request slot back once it starts). Over every cap: an immediate 503."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int, max_streams: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._pools = {"request": threading.BoundedSemaphore(max_connections), "reserve": threading.BoundedSemaphore(HEALTH_RESERVE),
                       "stream": threading.BoundedSemaphore(max_streams)}
        self._held: dict[int, str] = {}  # id(request socket) -> the pool its slot came from
        self._lock = threading.Lock()
        self.rejected = 0
        self.open_connections = 0
        self.open_streams = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        pool = next((name for name in ("request", "reserve") if self._pools[name].acquire(blocking=False)), None)
        if pool is None:
            self.reject(request)
            return
        with self._lock:
            self._held[id(request)] = pool
            self.open_connections += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def reject(self, request: Any) -> None:
        with self._lock:
            self.rejected += 1
        try:
            request.settimeout(1.0)
            request.sendall(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def slot(self, request: Any) -> str | None:
        with self._lock:
            return self._held.get(id(request))

    def to_stream(self, request: Any) -> bool:
        """Move this connection onto a stream slot (its request slot is freed); False when every stream slot is taken."""
        if not self._pools["stream"].acquire(blocking=False):
            return False
        with self._lock:
            old = self._held.get(id(request))
            self._held[id(request)] = "stream"
            self.open_streams += 1
        if old is not None:
            self._pools[old].release()
        return True

    def _release(self, request: Any) -> None:
        with self._lock:
            pool = self._held.pop(id(request), None)
            self.open_connections -= 1
            if pool == "stream":
                self.open_streams -= 1
        if pool is not None:
            self._pools[pool].release()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)


def host_allowed(host_header: str | None, bound: str) -> bool:
    """A request's ``Host`` names this machine: an IP literal, localhost, this host's names or the bound
    address. A tokenless server refuses other names: a web page whose domain was re-bound to this
    machine's address (DNS rebinding) must not read its state or frames from a browser."""
    if not host_header:
        return True  # HTTP/1.0 clients (curl -0, watchdogs) send none; a browser always does
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {"localhost", bound.lower(), socket.gethostname().lower(), socket.getfqdn().lower()}
    return name in names or name.endswith(".localhost")


class HealthServer:
    """Serves snapshots taken by ``snapshot()`` (a dict; see :meth:`edgefg.runtime.loop.camera_loop.CameraLoop.snapshot`)
    and, given ``live`` (:class:`~edgefg.runtime.outputs.live.LiveOutputs`), the page and the MJPEG streams.
    :class:`HttpOutput` is the server as a run output."""

    def __init__(self, address: str, snapshot: Callable[[], dict[str, Any]], stale_after_s: float = 30.0, live: Any = None,
                 token: str | None = None, max_connections: int = 32, timeout_s: float = 10.0, events: EventLog | None = None,
                 extra: Callable[[], dict[str, Any]] | None = None, stream_fps: float = 10.0, outputs: list[Any] | None = None,
                 metric_outputs: list[Any] | None = None, max_streams: int | None = None) -> None:
        host, port = parse_address(address)
        if max_connections < 1:
            raise EdgefgError(f"--http-max-connections must be ≥ 1, got {max_connections}")
        if not timeout_s > 0:
            raise EdgefgError(f"--http-timeout must be > 0 seconds, got {timeout_s}")
        self.snapshot = snapshot
        self.stale_after_s = stale_after_s
        self.live = live
        self.token = token
        self.extra = extra or (lambda: {})
        self.outputs = list(outputs or [])  # field outputs (edgefg.runtime.outputs.contract): their routes, metrics and stats
        self.metric_outputs = list(metric_outputs or [])  # other run outputs whose metrics are served (MQTT's)
        self.extra_routes: dict[str, Any] = {}
        for o in self.outputs:
            self.extra_routes.update(o.routes())
        self.stream_fps = stream_fps
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # socket timeout for every read and write: half-open clients are dropped

            def log_message(self, *args: Any) -> None:  # keep stderr for the event log
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path, _, query = self.path.partition("?")
                path = path.rstrip("/") or "/"
                params = {k: v[-1] for k, v in parse_qs(query).items()}
                if server.httpd.slot(self.request) == "reserve" and path not in HEALTH_PATHS:
                    self.reply(503, json.dumps({"error": "busy", "hint": f"every connection slot is taken; only {' and '.join(HEALTH_PATHS)} are answered now"}),
                               "application/json", {"Retry-After": "5"})
                    return
                if server.token is None and path != "/healthz" and not host_allowed(self.headers.get("Host"), server.host):
                    self.reply(403, json.dumps({"error": "unknown Host", "hint": "use this machine's address or name, or protect the server with --http-token-file"}),
                               "application/json")
                    return
                if server.token is not None and path != "/healthz" and not server.authorized(self.headers.get("Authorization"), params.get("token")):
                    self.reply(401, json.dumps({"error": "unauthorized", "hint": "send Authorization: Bearer TOKEN"}), "application/json",
                               {"WWW-Authenticate": 'Bearer realm="edgefg"'})
                    return
                try:
                    if path == "/stream.mjpg":
                        self.stream(params.get("camera"))
                        return
                    code, body, ctype = server.route(path, params)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    return
                except Exception as exc:  # never let a request kill the thread
                    code, body, ctype = 500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}), "application/json"
                try:
                    if isinstance(body, (str, bytes)):
                        self.reply(code, body, ctype)
                    else:
                        self.send_chunks(code, body, ctype)
                except OSError:
                    pass

            def reply(self, code: int, body: str | bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode("utf-8") if isinstance(body, str) else body
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.common_headers()
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def common_headers(self) -> None:
                """No caching, no MIME sniffing, no token leaking in a Referer."""
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")

            def send_chunks(self, code: int, chunks: Any, ctype: str) -> None:
                """A streamed body (e.g. a tar of collected frames): no Content-Length, the connection closes at its end."""
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.common_headers()
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in chunks:
                        if server.closing.is_set():
                            break
                        self.wfile.write(chunk)
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()

            def stream(self, camera: str | None) -> None:
                cam = server.camera_or_none(camera)
                if cam is None or server.live is None:
                    self.reply(404, json.dumps({"error": f"no camera '{camera}'", "cameras": server.camera_names()}), "application/json")
                    return
                if not server.httpd.to_stream(self.request):  # streams have slots of their own: viewers never starve requests
                    self.reply(503, json.dumps({"error": "too many streams", "hint": "close a viewer, or raise --http-max-connections"}),
                               "application/json", {"Retry-After": "5"})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=edgefgframe")
                self.common_headers()
                self.end_headers()
                seq, period = 0, 1.0 / max(0.1, server.stream_fps)
                while not server.closing.is_set():
                    t0 = time.monotonic()
                    got = server.live.jpeg(cam, after_seq=seq, timeout=1.0)
                    if got is None:
                        continue
                    seq, data = got
                    self.wfile.write(b"--edgefgframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                    self.wfile.flush()
                    left = period - (time.monotonic() - t0)
                    if left > 0 and server.closing.wait(left):
                        return

        self.closing = threading.Event()
        try:
            self.httpd = _Server((host, port), Handler, max_connections, max_streams or max(2, max_connections // 4))
        except OSError as exc:
            raise EdgefgError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --http port or stop what holds it") from None
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self.port = self.httpd.server_address[1]
        self.host = host
        if token is None and not is_loopback(host) and events is not None:
            events.emit("http_insecure", address=self.address,
                        warning="listening beyond this machine without a token: anyone on the network can watch the cameras",
                        hint="add --http-token-file FILE, or bind 127.0.0.1")
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="edgefg-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def authorized(self, header: str | None, query_token: str | None) -> bool:
        assert self.token is not None
        given = ""
        if header and header.lower().startswith("bearer "):
            given = header[7:].strip()
        elif query_token:
            given = query_token
        return hmac.compare_digest(given.encode(), self.token.encode())

    # -- routes --------------------------------------------------------------------------------
    def cameras(self, snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return snap.get("cameras") or {"default": snap}

    def camera_names(self) -> list[str]:
        return list(self.live.cameras) if self.live is not None else list(self.cameras(self.snapshot()))

    def camera_or_none(self, camera: str | None) -> str | None:
        names = self.camera_names()
        if camera is None and len(names) == 1:
            return names[0]
        return camera if camera in names else None

    def route(self, path: str, params: dict[str, str]) -> tuple[int, str | bytes, str]:
        if path == "/healthz":
            return self.health()
        if path == "/":
            from edgefg.runtime.outputs.webpage import PAGE

            return 200, PAGE, "text/html; charset=utf-8"
        if path == "/latest":
            snap = self.snapshot()
            if "camera" in params:
                cam = self.cameras(snap).get(params["camera"])
                if cam is None:
                    return 404, json.dumps({"error": f"no camera '{params['camera']}'", "cameras": list(self.cameras(snap))}), "application/json"
                latest = cam.get("latest")
            else:
                latest = snap.get("latest")
            return (200, json.dumps(latest), "application/json") if latest else (204, "", "application/json")
        if path == "/metrics":
            metrics = [m for o in (*self.outputs, *self.metric_outputs) for m in o.metrics()]
            return 200, prometheus_text({**self.snapshot(), **self.extra(), "http": self.stats()}, metrics), "text/plain; version=0.0.4; charset=utf-8"
        if path == "/api/state":
            return 200, json.dumps(self.state(), default=str), "application/json"
        if path == "/snapshot.jpg" and params.get("sighting") is not None:  # a recent sighting's best frame
            best = self.live.sighting_jpeg(params["sighting"]) if self.live is not None else None
            if best is None:
                return 404, json.dumps({"error": f"no snapshot of sighting '{params['sighting']}' (unknown, or older than the last sightings kept)"}), "application/json"
            return 200, best, "image/jpeg"
        if path == "/snapshot.jpg":
            cam_name = self.camera_or_none(params.get("camera"))
            got = self.live.jpeg(cam_name, timeout=2.0) if cam_name is not None and self.live is not None else None
            if got is None:
                return 404, json.dumps({"error": "no frame yet" if cam_name else f"no camera '{params.get('camera')}'"}), "application/json"
            return 200, got[1], "image/jpeg"
        if path in self.extra_routes:
            return self.extra_routes[path](params)
        return 404, json.dumps({"error": "not found", "paths": ["/", "/stream.mjpg?camera=NAME", "/snapshot.jpg?camera=NAME", "/snapshot.jpg?sighting=ID", "/api/state",
                                                                 "/healthz", "/latest", "/metrics", *self.extra_routes]}), "application/json"

    def stats(self) -> dict[str, int]:
        return {"rejected": self.httpd.rejected, "open": self.httpd.open_connections, "streams": self.httpd.open_streams}

    def state(self) -> dict[str, Any]:
        snap = self.snapshot()
        cams = {name: {k: v for k, v in c.items() if k != "histograms"} for name, c in self.cameras(snap).items()}
        return {"info": snap.get("info", {}), "running": snap.get("running", False), "cameras": cams, "health": self._health(snap)[1],
                "sightings": self.live.sightings() if self.live is not None else [], "counts": self.live.counts() if self.live is not None else {},
                "mqtt": self.extra().get("mqtt"),
                "outputs": {o.name: o.stats() for o in self.outputs}}

    def _health(self, snap: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        now = time.time()
        up = snap["running_s"] if "running_s" in snap else now - snap["started"]  # monotonic when the loop gives it
        running = snap.get("running", False)
        per: dict[str, Any] = {}
        for name, c in self.cameras(snap).items():
            if "last_frame_age_s" in c:  # the loop's monotonic age: a wall-clock step cannot make a stalled camera look fresh
                age = c["last_frame_age_s"]
            else:
                last = c.get("last_frame_time")
                age = None if last is None else round(now - last, 3)
            fresh = age is not None and age <= self.stale_after_s or age is None and up <= self.stale_after_s
            per[name] = {"ok": bool(fresh and c.get("running", True)), "last_frame_age_s": age, "frames": c.get("frames", 0),
                         "reconnects": c.get("reconnects", 0)}
        n_ok = sum(v["ok"] for v in per.values())
        status = "ok" if running and n_ok == len(per) else "degraded" if running and n_ok else "unhealthy"
        body = {"status": status, "running": running, "frames": snap.get("frames", 0), "source_reconnects": snap.get("reconnects", 0),
                "uptime_s": round(up, 3), "cameras": per}
        if len(per) == 1:
            body["last_frame_age_s"] = next(iter(per.values()))["last_frame_age_s"]
        mqtt = self.extra().get("mqtt")
        if mqtt:  # cameras fine but nothing can be published (a dead client thread, a spool disk error): degraded
            body["mqtt"] = {k: mqtt.get(k) for k in ("healthy", "connected", "spool_ok") if k in mqtt}
            if status == "ok" and (mqtt.get("healthy") is False or mqtt.get("spool_ok") is False):
                body["status"] = status = "degraded"
        return (503 if status == "unhealthy" else 200), body

    def health(self) -> tuple[int, str, str]:
        code, body = self._health(self.snapshot())
        return code, json.dumps(body), "application/json"

    def close(self) -> None:
        self.closing.set()
        if self._thread.ident is not None:  # shutdown() waits for serve_forever: only once started
            self.httpd.shutdown()
            self._thread.join(2)
        self.httpd.server_close()


class HttpOutput(OutputBase):
    """``--http``: the :class:`HealthServer` as a run output; closed last, so it serves while the others close."""

    name = "http"
    close_order = 3

    def __init__(self, server: HealthServer) -> None:
        self.server = server

    def close(self) -> None:
        self.server.close()


def open_http(ctx: Any, live: Any = None, outputs: list[Any] | None = None, others: list[Any] | None = None) -> HttpOutput | None:
    """The HTTP server, when ``--http`` is given: the loop's snapshot, the live state's page and streams,
    ``outputs`` (the field outputs: their routes, metrics and page sections) and the metrics of ``others``
    (the other run outputs: MQTT's)."""
    opts = ctx.opts
    if not opts.http:
        return None
    token = read_token(opts.http_token_file) if opts.http_token_file else None
    mqtt = ctx.mqtt
    server = HealthServer(opts.http, ctx.snapshot, stale_after_s=max(30.0, 3 * opts.stall_timeout_s), live=live, token=token,
                          max_connections=opts.http_max_connections, timeout_s=opts.http_timeout_s, events=ctx.events,
                          extra=(lambda: {"mqtt": mqtt.stats()}) if mqtt is not None else None, outputs=outputs, metric_outputs=others).start()
    ctx.events.emit("http_listening", address=server.address, paths=["/", "/stream.mjpg", "/healthz", "/latest", "/metrics", *server.extra_routes],
                    auth=token is not None)
    return HttpOutput(server)


def _labels(d: dict[str, Any]) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"' for k, v in d.items())
    return "{" + inner + "}"


def prometheus_text(snap: dict[str, Any], extra: list[Any] | None = None) -> str:
    """A snapshot → Prometheus exposition format (text 0.0.4). Names follow the Prometheus conventions:
    ``edgefg_`` prefix, base units (seconds), ``_total`` counters, ``_seconds`` histograms, a ``camera`` label."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        lines.append(f"# HELP edgefg_{name} {help_}")
        lines.append(f"# TYPE edgefg_{name} {kind}")
        for labels, value in samples:
            lines.append(f"edgefg_{name}{_labels(labels) if labels else ''} {float(value):.9g}")

    cams: dict[str, dict[str, Any]] = snap.get("cameras") or {"default": snap}
    now = time.time()
    info = snap.get("info", {})
    metric("info", "gauge", "Bundle being run.", [({k: v for k, v in info.items() if k != "source"}, 1)])
    metric("up", "gauge", "1 while the pipeline loop runs.", [({}, 1 if snap.get("running") else 0)])
    metric("camera_info", "gauge", "Camera name and source (credentials masked).",
           [({"camera": n, "source": c.get("source", info.get("source", ""))}, 1) for n, c in cams.items()])
    per_camera = [
        ("frames_total", "counter", "Frames classified.", "frames"),
        ("dropped_frames_total", "counter", "Live frames dropped because inference was busy (latest-frame slot).", "dropped"),
        ("skipped_frames_total", "counter", "Frames that could not be decoded or preprocessed.", "skipped"),
        ("source_reconnects_total", "counter", "Times the source was reopened.", "reconnects"),
        ("source_stalls_total", "counter", "Times the source stalled (no frame within the stall timeout).", "stalls"),
        ("label_changes_total", "counter", "Times the decided (smoothed) label changed.", "label_changes"),
        ("unknown_frames_total", "counter", "Frames decided as unknown (open-set rejection).", "unknown"),
        ("frames_per_second", "gauge", "Classified frames per second over the recent window.", "fps_recent"),
    ]
    for name, kind, help_, key in per_camera:
        metric(name, kind, help_, [({"camera": n}, c.get(key, 0) or 0) for n, c in cams.items()])
    last = [(n, c["last_frame_time"]) for n, c in cams.items() if c.get("last_frame_time")]
    if last:
        metric("last_frame_timestamp_seconds", "gauge", "Unix time of the camera's last frame.", [({"camera": n}, t) for n, t in last])
        metric("frame_age_seconds", "gauge", "Seconds since the camera's last frame (staleness).", [({"camera": n}, max(0.0, now - t)) for n, t in last])
    hist_lines: list[str] = []
    for n, c in cams.items():
        for stage, h in (c.get("histograms") or {}).items():
            for le, count in h["buckets"]:
                hist_lines.append(f"edgefg_stage_latency_seconds_bucket{_labels({'camera': n, 'stage': stage, 'le': le})} {count}")
            hist_lines.append(f"edgefg_stage_latency_seconds_sum{_labels({'camera': n, 'stage': stage})} {h['sum']:.9g}")
            hist_lines.append(f"edgefg_stage_latency_seconds_count{_labels({'camera': n, 'stage': stage})} {h['count']}")
    if hist_lines:
        lines += ["# HELP edgefg_stage_latency_seconds Per-stage latency since start, seconds.", "# TYPE edgefg_stage_latency_seconds histogram", *hist_lines]
    if "batches" in snap:
        metric("inference_batches_total", "counter", "Model calls (one per micro-batch).", [({}, snap["batches"])])
    mqtt = snap.get("mqtt")
    if mqtt:
        metric("mqtt_connected", "gauge", "1 while connected to the MQTT broker.", [({}, 1 if mqtt["connected"] else 0)])
        metric("mqtt_spool_messages", "gauge", "Events waiting in the on-disk spool for the broker.", [({}, mqtt["spool_depth"])])
        metric("mqtt_spool_dropped_total", "counter", "Events dropped: the spool was full (oldest first) or its disk failed (by reason: mqtt_spool_dropped_events_total).", [({}, mqtt["spool_dropped"])])
        metric("mqtt_published_total", "counter", "Events the broker acknowledged (this run).", [({}, mqtt["published"])])
        metric("mqtt_inflight_messages", "gauge", "Events sent to the broker and not yet acknowledged.", [({}, mqtt.get("inflight", 0))])
    http = snap.get("http")
    if http:
        metric("http_rejected_connections_total", "counter", "HTTP connections refused by the connection cap.", [({}, http["rejected"])])
        metric("http_open_connections", "gauge", "HTTP connections being served.", [({}, http["open"])])
    for name, kind, help_, samples in extra or []:  # field outputs' metrics (collect, drift, ...)
        metric(name, kind, help_, list(samples))
    return "\n".join(lines) + "\n"
