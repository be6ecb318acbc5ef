"""Optional HTTP endpoint (stdlib ``http.server`` on a daemon thread):

``/healthz``  200 ``{"status": "ok", ...}`` while frames arrive, 503 when the source has given no
              frame for ``stale_after_s`` (or the pipeline stopped) — for systemd/k8s/watchdogs.
``/latest``   the latest result as JSON (204 before the first frame).
``/metrics``  Prometheus text format: frames, drops, skipped, reconnects, stalls, FPS, per-stage
              latency quantiles, label changes.
Bind to 127.0.0.1 unless the camera network is trusted: there is no authentication.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from edgefg.errors import EdgefgError


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


class HealthServer:
    """Serves snapshots taken by ``snapshot()`` (a dict; see ``Pipeline.snapshot``)."""

    def __init__(self, address: str, snapshot: Callable[[], dict[str, Any]], stale_after_s: float = 30.0) -> None:
        host, port = parse_address(address)
        self.snapshot = snapshot
        self.stale_after_s = stale_after_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep stderr for the event log
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                try:
                    if path == "/healthz":
                        code, body, ctype = server.health()
                    elif path == "/latest":
                        latest = server.snapshot().get("latest")
                        code, body, ctype = (200, json.dumps(latest), "application/json") if latest else (204, "", "application/json")
                    elif path == "/metrics":
                        code, body, ctype = 200, prometheus_text(server.snapshot()), "text/plain; version=0.0.4; charset=utf-8"
                    else:
                        code, body, ctype = 404, json.dumps({"error": "not found", "paths": ["/healthz", "/latest", "/metrics"]}), "application/json"
                except Exception as exc:  # never let a request kill the thread
                    code, body, ctype = 500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}), "application/json"
                data = body.encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if data:
                    self.wfile.write(data)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EdgefgError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --http port or stop what holds it") from None
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="edgefg-http", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def health(self) -> tuple[int, str, str]:
        snap = self.snapshot()
        last = snap.get("last_frame_time")
        age = None if last is None else round(time.time() - last, 3)
        ok = snap.get("running", False) and (age is not None and age <= self.stale_after_s or age is None and time.time() - snap["started"] <= self.stale_after_s)
        body = {
            "status": "ok" if ok else "unhealthy",
            "running": snap.get("running", False),
            "last_frame_age_s": age,
            "frames": snap.get("frames", 0),
            "source_reconnects": snap.get("reconnects", 0),
            "uptime_s": round(time.time() - snap["started"], 3),
        }
        return (200 if ok else 503), json.dumps(body), "application/json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)


def _labels(d: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"' for k, v in d.items())
    return "{" + inner + "}"


def prometheus_text(snap: dict[str, Any]) -> str:
    """A snapshot → Prometheus exposition format (text 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP edgefg_{name} {help_}")
        lines.append(f"# TYPE edgefg_{name} {kind}")
        for labels, value in samples:
            lines.append(f"edgefg_{name}{_labels(labels) if labels else ''} {float(value):.6g}")

    info = snap.get("info", {})
    metric("info", "gauge", "Bundle and source being run.", [(info, 1)])
    metric("up", "gauge", "1 while the pipeline loop runs.", [({}, 1 if snap.get("running") else 0)])
    metric("frames_total", "counter", "Frames classified.", [({}, snap.get("frames", 0))])
    metric("dropped_frames_total", "counter", "Live frames dropped because inference was busy (latest-frame slot).", [({}, snap.get("dropped", 0))])
    metric("skipped_frames_total", "counter", "Frames that could not be decoded or preprocessed.", [({}, snap.get("skipped", 0))])
    metric("source_reconnects_total", "counter", "Times the source was reopened.", [({}, snap.get("reconnects", 0))])
    metric("source_stalls_total", "counter", "Times the source stalled (no frame within --stall-timeout).", [({}, snap.get("stalls", 0))])
    metric("label_changes_total", "counter", "Times the decided (smoothed) label changed.", [({}, snap.get("label_changes", 0))])
    metric("unknown_total", "counter", "Frames decided as unknown (open-set rejection).", [({}, snap.get("unknown", 0))])
    metric("fps", "gauge", "Frames per second over the recent window.", [({}, snap.get("fps_recent", 0.0))])
    if snap.get("last_frame_time"):
        metric("last_frame_timestamp_seconds", "gauge", "Unix time of the last frame read.", [({}, snap["last_frame_time"])])
    samples = []
    for stage, q in snap.get("stages_recent", {}).items():
        for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            samples.append(({"stage": stage, "quantile": quantile}, q[key]))
    if samples:
        metric("stage_latency_ms", "summary", "Per-stage latency over the recent window, milliseconds.", samples)
    return "\n".join(lines) + "\n"
