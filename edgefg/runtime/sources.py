"""Frame sources: camera index or /dev/videoN, video file, URL, image file, image folder or glob.

Every source yields :class:`Frame` objects (BGR uint8). numpy + OpenCV only.
"""
from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edgefg.errors import InputPathError, SourceError
from edgefg.runtime.preprocess import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


@dataclass
class Frame:
    index: int
    timestamp: float  # seconds: media position for files, wall clock for live sources
    image: np.ndarray | None  # None when the frame could not be decoded
    name: str = ""


class Source:
    """Iterable of frames; ``skipped`` counts unreadable frames/images."""

    live = False

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ImageListSource(Source):
    def __init__(self, spec: str, paths: list[Path]) -> None:
        super().__init__(spec)
        self.paths = paths

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.paths):
            try:
                image = read_image(p)
            except Exception:
                log.warning("skipping unreadable image '%s'", p)
                self.skipped += 1
                image = None
            yield Frame(i, time.time(), image, p.name)


class VideoSource(Source):
    """OpenCV VideoCapture over a file, a camera index/device or a URL."""

    def __init__(self, spec: str, target: str | int, live: bool) -> None:
        super().__init__(spec)
        self.live = live
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            what = "camera" if live else "video"
            raise SourceError(f"cannot open {what} '{spec}'", "check the device index/path or URL and that nothing else holds it")

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, image = self.cap.read()
            if not ok:
                if self.live:
                    raise SourceError(f"source '{self.spec}' stopped delivering frames", "check the camera connection")
                return
            ts = time.time() if self.live else self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            yield Frame(i, ts, image, self.spec)
            i += 1

    def close(self) -> None:
        self.cap.release()


def open_source(spec: str) -> Source:
    """Pick the source type from ``spec``."""
    if spec.isdigit():
        return VideoSource(spec, int(spec), live=True)
    if spec.startswith("/dev/video"):
        return VideoSource(spec, spec, live=True)
    if "://" in spec:
        return VideoSource(spec, spec, live=True)
    if any(ch in spec for ch in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputPathError(f"no images match '{spec}'")
        return ImageListSource(spec, paths)
    path = Path(spec)
    if not path.exists():
        raise InputPathError(f"source '{spec}' does not exist", "pass a camera index, a video/image file, a folder or a URL")
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputPathError(f"folder '{spec}' holds no images")
        return ImageListSource(spec, paths)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageListSource(spec, [path])
    return VideoSource(spec, str(path), live=False)
