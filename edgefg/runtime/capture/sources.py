"""Frame sources: camera index or /dev/videoN (V4L2), ``gst:`` GStreamer pipeline, RTSP/HTTP URL,
video file, image file, image folder or glob.

Every source yields :class:`Frame` objects (BGR uint8; ``image`` is None for a frame that could not
be decoded). ``live`` sources (cameras, streams) are read on a capture thread that keeps only the
latest frame; files are read in order. A source that fails is reopened by :mod:`edgefg.runtime.capture.reader`
through :meth:`Source.reopen`. numpy + OpenCV only.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgefg.errors import InputPathError, SourceError, UnsupportedError
from edgefg.runtime.engine.preprocess import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)
# FFmpeg/OpenCV print their own warnings (reconnect attempts, "stream ends prematurely") on stderr,
# which is where the structured event log goes; the events already carry the cause. Keep them quiet
# unless the user asks (set OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL themselves, e.g. to 32 / INFO).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg is first used
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
MAX_BAD_READS = 25  # consecutive undecodable frames in a file before it is treated as truncated


def redact(spec: str) -> str:
    """``rtsp://user:secret@cam/stream`` → ``rtsp://user:***@cam/stream``; every other secret form too
    (see :func:`edgefg.trust.secrets.mask`) — for logs, results, /metrics and errors."""
    from edgefg.trust.secrets import mask

    return mask(spec)


@dataclass
class Frame:
    index: int
    timestamp: float  # seconds: media position for files, wall clock for live sources
    image: np.ndarray | None  # None when the frame could not be decoded
    name: str = ""
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)  # set once classified (field outputs read it)


class Source:
    """Iterable of frames; ``skipped`` counts undecodable frames the source passed over without
    yielding them (frames yielded with ``image=None`` are counted by the pipeline).

    Subclasses set ``live`` (True: frames arrive in real time and may be dropped; reopened when they
    stop) and implement ``__iter__``; iteration raising :class:`SourceError` means "lost".
    """

    live = False
    kind = "source"
    reopenable = True  # False: when it ends or fails, the run ends

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.name = redact(spec)  # what logs, results and /metrics show
        self.skipped = 0
        self.end_note = ""  # why iteration ended early (e.g. a truncated file), for the event log

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def reopen(self) -> Source:
        """A fresh source on the same spec (called after a failure or a stall)."""
        return open_source(self.spec)

    @property
    def fps(self) -> float | None:
        return None

    def close(self) -> None:
        pass


class ImageListSource(Source):
    kind = "images"

    def __init__(self, spec: str, paths: list[Path]) -> None:
        super().__init__(spec)
        self.paths = paths

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.paths):
            try:
                image = read_image(p)
            except Exception:  # yielded as None: the pipeline counts and logs it
                image = None
            yield Frame(i, time.time(), image, p.name)


class ArraySource(Source):
    """Frames you already have (numpy BGR images from your own camera SDK, a list, a generator).

    ``live=True`` treats them as a camera (latest-frame slot, drops when inference is busy).
    """

    kind = "array"
    reopenable = False

    def __init__(self, frames: Iterable[np.ndarray], live: bool = False, spec: str = "array") -> None:
        super().__init__(spec)
        self.frames = frames
        self.live = live

    def __iter__(self) -> Iterator[Frame]:
        for i, image in enumerate(self.frames):
            yield Frame(i, time.time(), image, self.spec)


class VideoSource(Source):
    """OpenCV VideoCapture over a file, a camera index/device, a URL or a GStreamer pipeline."""

    def __init__(self, spec: str, target: str | int, live: bool, kind: str = "video", api: int | None = None,
                 open_timeout_s: float = 10.0, read_timeout_s: float = 10.0) -> None:
        super().__init__(spec)
        self.live = live
        self.kind = kind
        params: list[int] = []
        if kind == "url":  # FFMPEG honours these; without them a dead RTSP server blocks for minutes
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1e3), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1e3)]
        if api is None:
            api = cv2.CAP_FFMPEG if kind in ("url", "video") else cv2.CAP_ANY
        self.cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
        if not self.cap.isOpened():
            self.cap.release()
            hint = {
                "camera": "check the device index/path and that nothing else holds the camera",
                "url": "check the URL, credentials and that the stream is up",
                "gst": "check the pipeline with gst-launch-1.0 and that it ends in 'appsink'",
            }.get(kind, "check that the file is a complete video OpenCV can decode")
            raise SourceError(f"cannot open {kind} source '{redact(spec)}'", hint)
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        from edgefg.runtime.engine.image_limits import ENV, max_pixels

        limit = max_pixels()
        if limit and w * h > limit:  # what the stream/file header declares, before frames are decoded
            self.cap.release()
            raise SourceError(f"{kind} source '{redact(spec)}' delivers {w}×{h} frames, over the {limit / 1e6:g} MP limit",
                              f"raise it with --max-pixels or {ENV} if such frames are expected")
        total = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(total) if not live and total and total > 0 else None

    @property
    def fps(self) -> float | None:
        f = self.cap.get(cv2.CAP_PROP_FPS)
        return float(f) if f and 0 < f < 1000 else None

    def __iter__(self) -> Iterator[Frame]:
        i, bad = 0, 0
        while True:
            ok, image = self.cap.read()
            if not ok or image is None:
                if self.live:
                    raise SourceError(f"source '{self.name}' stopped delivering frames", "check the camera/stream connection")
                # A file: the end, a corrupt frame in the middle, or a truncated file.
                if self.frame_count is not None and i + bad < self.frame_count and bad < MAX_BAD_READS:
                    bad += 1  # counted as skipped only if a good frame follows (else: the end)
                    continue
                if self.frame_count is not None and i < self.frame_count:
                    self.end_note = f"ended after {i} of {self.frame_count} frames (truncated or corrupt file)"
                return
            if bad:
                self.skipped += bad
                i += bad
                bad = 0
            ts = time.time() if self.live else self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            yield Frame(i, ts, image, self.name)
            i += 1

    def close(self) -> None:
        self.cap.release()


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    start = info.find("GStreamer:")
    return start >= 0 and info[start : start + 40].split(":", 1)[1].strip().upper().startswith("YES")


def jetson_gst_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0) -> str:
    """The CSI-camera pipeline for Jetson (nvarguscamerasrc → BGR appsink), ready for ``--source gst:…``."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def usb_gst_pipeline(device: str = "/dev/video0", width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """A V4L2 (USB camera) pipeline for GStreamer builds of OpenCV."""
    return (
        f"v4l2src device={device} ! video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def open_source(spec: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0) -> Source:
    """Pick the source type from ``spec``."""
    spec = str(spec)
    if spec.startswith("gst:"):
        if not gstreamer_available():
            raise UnsupportedError(
                "this OpenCV build has no GStreamer support, so 'gst:' sources cannot be opened",
                "on Jetson use the system OpenCV (JetPack's python3-opencv has GStreamer), or pass a /dev/videoN or RTSP URL",
            )
        return VideoSource(spec, spec[4:].strip(), live=True, kind="gst", api=cv2.CAP_GSTREAMER)
    if spec.isdigit():
        return VideoSource(spec, int(spec), live=True, kind="camera", api=cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY)
    if spec.startswith("/dev/video"):
        return VideoSource(spec, spec, live=True, kind="camera", api=cv2.CAP_V4L2)
    if spec.lower().startswith(STREAM_SCHEMES) or "://" in spec:
        return VideoSource(spec, spec, live=True, kind="url", open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    if any(ch in spec for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputPathError(f"no images match '{spec}'")
        return ImageListSource(spec, paths)
    path = Path(spec)
    if not path.exists():
        raise InputPathError(f"source '{spec}' does not exist", "pass a camera index, /dev/videoN, a video/image file, a folder, a glob, a URL or gst:PIPELINE")
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputPathError(f"folder '{spec}' holds no images")
        return ImageListSource(spec, paths)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageListSource(spec, [path])
    return VideoSource(spec, str(path), live=False, kind="video")


def gst_pipeline_for_bundle(bundle: str | Path) -> str:
    """The ready-made ``--source gst:…`` for the bundle's target: Jetson CSI for jetson profiles,
    a V4L2 USB-camera pipeline otherwise (both need an OpenCV built with GStreamer)."""
    from edgefg.manifest import load_manifest

    manifest = load_manifest(bundle, verify=False)
    family = ""
    if manifest.target:
        try:
            from edgefg.targets import load_target

            family = load_target(manifest.target).family
        except Exception:  # an unknown/custom target: fall back to the generic pipeline
            family = ""
    if family == "jetson" or "jetson" in (manifest.target or ""):
        pipe, what = jetson_gst_pipeline(), f"Jetson CSI camera (target {manifest.target}; sensor-id, size and framerate to taste)"
    else:
        pipe, what = usb_gst_pipeline(), f"V4L2 USB camera (target {manifest.target or 'unknown'}; a camera index or /dev/videoN needs no GStreamer)"
    note = "" if gstreamer_available() else "\n# note: this OpenCV has no GStreamer; on the device use an OpenCV built with it (JetPack's python3-opencv)"
    return f"# {what}{note}\nedgefg run {bundle} --source 'gst:{pipe}'"
