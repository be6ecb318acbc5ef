"""Fault-injecting sources and a loopback MJPEG server for the runtime tests."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from edgefg.errors import SourceError
from edgefg.runtime.capture.sources import Frame, Source


def synthetic_frame(i: int, h: int = 96, w: int = 128) -> np.ndarray:
    img = np.full((h, w, 3), (i * 7) % 200 + 20, np.uint8)
    cv2.putText(img, str(i), (5, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return img


class FakeSource(Source):
    """Yields ``n`` synthetic frames; faults by frame position:

    ``fail_at``   raise SourceError before frame i (the camera was unplugged)
    ``stall_at``  sleep ``stall_s`` before frame i (a frozen stream)
    ``corrupt``   {i: kind} with kind None (undecodable), "gray", "float", "empty", "rgba"
    ``interval``  seconds between frames (a live camera's frame period)
    """

    def __init__(self, n: int = 10, live: bool = True, fail_at: int | None = None, stall_at: int | None = None, stall_s: float = 0.0,
                 corrupt: dict[int, str | None] | None = None, interval: float = 0.0, spec: str = "fake", image: np.ndarray | None = None) -> None:
        super().__init__(spec)
        self.live = live
        self.n, self.fail_at, self.stall_at, self.stall_s = n, fail_at, stall_at, stall_s
        self.corrupt = corrupt or {}
        self.interval = interval
        self.image = image
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            if self.fail_at is not None and i == self.fail_at:
                raise SourceError(f"fake source '{self.spec}' lost")
            if self.stall_at is not None and i == self.stall_at:
                time.sleep(self.stall_s)
            if self.interval:
                time.sleep(self.interval)
            image = self.image if self.image is not None else synthetic_frame(i)
            if i in self.corrupt:
                kind = self.corrupt[i]
                image = {None: None, "gray": image[:, :, 0].copy(), "float": image.astype(np.float32), "empty": np.zeros((0, 0, 3), np.uint8),
                         "rgba": np.dstack([image, image[:, :, :1]])}[kind]
            yield Frame(i, time.time() if self.live else i / 25.0, image, self.spec)

    def close(self) -> None:
        self.closed = True


class FlakyCamera:
    """A source factory for a camera that is killed and restored ``kills`` times.

    Each healthy session delivers ``frames_per_session`` frames and then dies (raises); the next
    ``dead_opens`` open attempts fail (the camera is gone), then it opens again.
    """

    def __init__(self, kills: int = 20, frames_per_session: int = 5, dead_opens: int = 2) -> None:
        self.kills, self.frames_per_session, self.dead_opens = kills, frames_per_session, dead_opens
        self.sessions = 0
        self.failed_opens = 0
        self._dead_left = 0

    def __call__(self) -> FakeSource:
        if self._dead_left > 0:
            self._dead_left -= 1
            self.failed_opens += 1
            raise SourceError("fake camera is unplugged")
        self.sessions += 1
        last = self.sessions > self.kills
        if not last:
            self._dead_left = self.dead_opens
        n = self.frames_per_session
        return FakeSource(n=10**6 if last else n + 1, fail_at=None if last else n, interval=0.002, spec=f"flaky-cam-{self.sessions}")


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream on 127.0.0.1 (what many IP cameras serve)."""

    def __init__(self, frames: int = 10_000, fps: float = 100.0, port: int = 0) -> None:
        self.frames, self.fps = frames, fps
        self.served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in range(server.frames):
                    if server._stop.is_set():
                        return
                    ok, buf = cv2.imencode(".jpg", synthetic_frame(i))
                    data = buf.tobytes()
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    server.served += 1
                    time.sleep(1.0 / server.fps)

        self._stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2)


def write_video(path, n: int = 30, size: tuple[int, int] = (128, 96), fourcc: str = "FFV1", fps: float = 25.0) -> str:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"cannot write {path}"
    for i in range(n):
        w.write(synthetic_frame(i, size[1], size[0]))
    w.release()
    return str(path)
