"""Where results go: JSON lines (stdout or a size-rotated file) and an annotated video file.

(The HTTP endpoint is :mod:`edgefg.runtime.outputs.httpd`; the Python API is :func:`edgefg.runtime.stream`.)
A sink has ``write(result, frame)`` and ``close()``; ``frame`` is the BGR image or None.
:class:`JsonlOutput` and :class:`VideoOutput` are the sinks as run outputs (:mod:`edgefg.runtime.outputs.contract`).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgefg.errors import EdgefgError, OutputExistsError
from edgefg.runtime.outputs.contract import OutputBase

# container suffix -> FourCC OpenCV's FFMPEG backend can write here (no H.264 encoder in the wheels)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


class Sink:
    def write(self, result: dict[str, Any], frame: np.ndarray | None) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """One JSON object per line to a stream or a file; a file is rotated when it passes ``rotate_mb``
    (``out.jsonl`` → ``out.jsonl.1`` → … → ``out.jsonl.<keep>``, the oldest deleted)."""

    def __init__(self, path: str | Path | None = None, rotate_mb: float | None = None, keep: int = 5, stream: TextIO | None = None,
                 flush_every: int = 1) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = int(rotate_mb * 1e6) if rotate_mb and path else None  # stdout is never rotated
        self.keep = max(1, keep)
        self.flush_every = max(1, flush_every)
        self.rotations = 0
        self._pending = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: TextIO = open(self.path, "a" if self.max_bytes else "w", encoding="utf-8")
        else:
            self._fh = stream or sys.stdout

    def write(self, result: dict[str, Any], frame: np.ndarray | None = None) -> None:
        self._fh.write(json.dumps(result, separators=(", ", ": ")) + "\n")
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()
        if self.max_bytes and self._fh.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None
        self._fh.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for i in range(self.keep - 1, 0, -1):
            p = self.path.with_name(f"{self.path.name}.{i}")
            if p.exists():
                os.replace(p, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "w", encoding="utf-8")
        self.rotations += 1

    def flush(self) -> None:
        self._pending = 0
        try:
            self._fh.flush()
        except ValueError:  # already closed
            pass

    def close(self) -> None:
        self.flush()
        if self.path is not None:
            self._fh.close()


class VideoSink(Sink):
    """Annotated frames (label, score, ROI box) to a video file; opened at the first frame."""

    def __init__(self, path: str | Path, fps: float = 10.0, roi: Callable[[tuple[int, ...]], tuple[int, int, int, int]] | None = None,
                 force: bool = True) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise EdgefgError(f"cannot write video '{path}': unknown container '{suffix}'", f"use one of {', '.join(sorted(FOURCC))} (.mkv = lossless FFV1)")
        if self.path.exists() and not force:
            raise OutputExistsError(f"'{path}' already exists")
        self.fourcc = FOURCC[suffix]
        self.fps = fps
        self.roi = roi
        self.frames = 0
        self._writer: Any = None  # cv2.VideoWriter, opened at the first frame

    def write(self, result: dict[str, Any], frame: np.ndarray | None) -> None:
        import cv2

        if frame is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, (w, h))
            if not self._writer.isOpened():
                raise EdgefgError(f"OpenCV cannot write '{self.path}' with codec {self.fourcc}", "try a .mkv or .avi path")
            self._size = (w, h)
        if (frame.shape[1], frame.shape[0]) != self._size:  # the source changed resolution after a reconnect
            frame = cv2.resize(frame, self._size)
        self._writer.write(annotate(frame, result, self.roi(frame.shape) if self.roi else None))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def annotate(frame: np.ndarray, result: dict[str, Any], roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A copy of ``frame`` with the ROI box and the decided label drawn on it."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    if roi is not None:
        x, y, rw, rh = roi
        cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), (0, 255, 255), 2)
    label = result.get("label") or (result["top"][0]["label"] if result.get("top") else "?")
    score = result.get("score", result["top"][0]["score"] if result.get("top") else 0.0)
    text = f"{label} {score:.2f}"
    scale = max(0.4, min(w, h) / 600)
    thick = max(1, int(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (min(w, tw + 10), th + base + 10), (0, 0, 0), -1)
    color = (0, 165, 255) if label == "unknown" else (0, 255, 0)
    cv2.putText(out, text, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    return out


# -- as run outputs (edgefg.runtime.outputs.contract) ------------------------------------------------------
class JsonlOutput(OutputBase):
    """``--output`` (default: stdout): every result as a JSON line; with ``--events`` only label changes."""

    name = "JsonlSink"  # what its sink_error events have always been called

    def __init__(self, sink: JsonlSink, changes_only: bool = False) -> None:
        self.sink = sink
        self.changes_only = changes_only

    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        if self.changes_only and not result["changed"]:
            return
        self.sink.write(result, frame.image)

    def close(self) -> None:
        self.sink.close()


class VideoOutput(OutputBase):
    """``--save-video out.mkv``: each camera's annotated frames (named cameras: ``out-NAME.mkv`` each)."""

    name = "VideoSink"

    def __init__(self, sinks: dict[str, VideoSink]) -> None:
        self.sinks = sinks

    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        sink = self.sinks.get(camera)
        if sink is not None:
            sink.write(result, frame.image)

    def close(self) -> None:
        first: Exception | None = None
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception as exc:  # close the others all the same
                first = first or exc
        if first is not None:
            raise first


def open_jsonl(ctx: Any) -> JsonlOutput:
    opts = ctx.opts
    try:
        sink = JsonlSink(opts.output, rotate_mb=opts.rotate_mb, keep=opts.rotate_keep)
    except OSError as exc:
        raise EdgefgError(f"cannot write --output '{opts.output}': {exc.strerror or exc}", "pick a writable path") from None
    return JsonlOutput(sink, changes_only=opts.events)


def open_video(ctx: Any) -> VideoOutput | None:
    opts = ctx.opts
    if not opts.save_video:
        return None
    base = Path(opts.save_video)
    sinks = {}
    for cam in ctx.cameras:
        path = base.with_name(f"{base.stem}-{cam}{base.suffix}") if ctx.named else base
        sinks[cam] = VideoSink(path, fps=opts.video_fps or ctx.fps.get(cam) or 10.0, roi=ctx.rois.get(cam))
    return VideoOutput(sinks)
