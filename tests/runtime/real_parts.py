"""Real external parts for the runtime tests: a mosquitto broker, a GStreamer RTSP server, Chromium.

Each is a real process. Outside CI a missing part skips its test with the reason; in CI (CI=true)
it fails, because `.ci/run` (make test-deps) installs them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (make test-deps installs it)")
    pytest.skip(f"{what} is not installed here (make test-deps installs it; CI runs this test)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Mosquitto:
    """A mosquitto broker on a free loopback port, with on-disk persistence (subscriptions and
    queued QoS 1 messages survive a restart), that can be killed and started again on the same port."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None, users: dict[str, str] | None = None) -> None:
        """``tls``: (certfile, keyfile) for a TLS listener; ``users``: username → password (anonymous refused)."""
        self.exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        require(self.exe is not None, "the mosquitto broker (Debian package 'mosquitto')")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}", "persistence true",
                 f"persistence_location {self.dir}/", "autosave_interval 1", "autosave_on_changes true", f"log_dest file {self.dir}/mosquitto.log"]
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if users:
            pw = self.dir / "passwords"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)  # hash in place
            lines.append(f"password_file {pw}")
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the 'mosquitto' user, who cannot write a pytest tmp dir
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    stop = kill


class RtspServer:
    """GStreamer's RTSP server (system python3 + gi, Debian gir1.2-gst-rtsp-server-1.0) serving a
    test pattern as MJPEG over RTP at rtsp://127.0.0.1:PORT/test; stop and start it on the same port."""

    SCRIPT = Path(__file__).with_name("rtsp_server.py")

    def __init__(self) -> None:
        self.python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        ok = subprocess.run([self.python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
                            capture_output=True).returncode == 0
        require(ok, "GStreamer's RTSP server for python3 (Debian python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/test"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        self.proc = subprocess.Popen([self.python, str(self.SCRIPT), str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_port(self.port, 15)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(f"the RTSP server did not start: {self.proc.communicate()[1][-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def chromium_paths() -> tuple[str | None, str | None]:
    browser = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "") if p and Path(p).exists()), None)
    driver = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and Path(p).exists()), None)
    return browser, driver
