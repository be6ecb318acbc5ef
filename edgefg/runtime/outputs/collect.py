"""Collect on the device (``edgefg run … --collect DIR``): keep the frames worth labelling.

A field camera sees thousands of frames the training set never had. This output keeps the few that
teach most — the model hesitated, flickered, or rejected them — plus a uniform sample, in a bounded
folder that feeds ``edgefg compress/tune --agreement-data DIR`` as it is, a labelling queue
(``edgefg collect export``) and, once sorted into class folders,
compress/tune's ``--val-data``.

Policies (``--collect-policy``, comma-separated; default all four), on the model's raw probability
vector of the frame (``frame.probabilities``, before smoothing) and the decided label:

``uncertain``  top-1 − top-2 probability below ``--collect-margin`` (default 0.15);
``flicker``    the raw top-1 class changed from the camera's previous frame, and it has changed at
               least twice within the camera's last ``--collect-flicker-window`` frames (default 6,
               this one included): A A B A or A B C is flicker, a clean A A B B change is not. The
               window is per camera and restarts when the camera's capture ends;
``novel``      the decided label is ``unknown`` (open-set rejection by ``--min-confidence`` /
               ``--min-margin``; without them nothing is ever rejected);
``random``     a uniform sample of every frame with probability ``--collect-random-rate`` (default 0.01).

A frame several policies choose is kept once, with all of their names. Then, per camera, a token bucket
holds the rate to ``--collect-per-hour`` (default 120; 0 = no limit) with a burst of one minute's worth
(at least one frame): in any hour a camera keeps at most N + N/60 frames. Frames are encoded and written
on a writer thread (at nice +10 on Linux: inference gets the cores first) behind a bounded queue (16 frames
or 64 MB of pixels): ``on_result`` never blocks —
with the queue full the frame is dropped and counted (``busy``); rate-limited frames count as ``rate``,
failed writes as ``error`` (one ``collect_error`` event a minute at most; an unwritable or full folder
never stops the camera, and writing resumes when the folder is back).

Layout of DIR (plain files: rsync it, or ``GET /collect.tar[?since=UNIX_TS][&camera=NAME]``)::

    DIR/crops/<camera>/<YYYY-MM-DD>/<id>.jpg    the crop the model saw (ROI, else the whole frame)
    DIR/.frames/<camera>/<YYYY-MM-DD>/<id>.jpg  the full frame, longest side at most 640 px (context)
    DIR/.meta/<camera>/<YYYY-MM-DD>/<id>.json   sidecar: camera, time, bundle, top-5, margin, policies, …

``<id>`` is ``<UTC time YYYYmmddTHHMMSS.mmmZ>-<camera>-f<frame index>`` (names sort by time; the date
folders are UTC). The full frames and the sidecars are in hidden folders, which every edgefg image
scanner skips: ``--agreement-data DIR`` reads the crops only, each frame once. The folder is a ring of at
most ``--collect-max-mb`` (default 500 MB = 5e8 bytes): before a frame is written, the oldest frames
(crop, full frame and sidecar together) are deleted until it fits; a restarted run picks up the files
already there.

The CLI imports this module at start-up: click and the standard library only at the top.
"""
from __future__ import annotations

import calendar
import csv
import itertools
import json
import math
import os
import queue
import random
import shutil
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edgefg.outputs import write_bytes

POLICIES = ("uncertain", "flicker", "novel", "random")
CROPS, FRAMES, META = "crops", ".frames", ".meta"
DEFAULT_MAX_MB = 500.0
DEFAULT_PER_HOUR = 120
DEFAULT_MARGIN = 0.15
DEFAULT_FLICKER_WINDOW = 6
DEFAULT_RANDOM_RATE = 0.01
FRAME_SIDE = 640  # longest side of the saved full frame
TOP = 5  # suggestions kept in the sidecar
ERROR_EVERY_S = 60.0  # at most one collect_error event per this many seconds
WRITER_NICE = 10  # the writer thread's nice increment (Linux): JPEG encoding yields the cores to inference
UNKNOWN = "unknown"  # edgefg.runtime.engine.postprocess.UNKNOWN (not imported: it loads numpy)


# -- options ---------------------------------------------------------------------------------
def parse_policies(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"uncertain,novel"`` (or a list) → the policy names, checked; a wrong name lists the valid ones."""
    from edgefg.errors import EdgefgError

    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise EdgefgError(f"unknown collect policy {', '.join(repr(b) for b in bad)}" if bad else "no collect policy given",
                          f"choose from {', '.join(POLICIES)} (comma-separated, e.g. uncertain,novel)")
    return tuple(dict.fromkeys(names))


@dataclass
class CollectOptions:
    """``edgefg run --collect DIR …``; the Python API: ``RunOptions(outputs={"collect": CollectOptions("DIR")})``."""

    directory: Path
    policies: tuple[str, ...] = POLICIES
    max_mb: float = DEFAULT_MAX_MB  # the folder's bound, MB (1e6 bytes)
    per_hour: float = DEFAULT_PER_HOUR  # frames per camera per hour (token bucket); 0 = no limit
    margin: float = DEFAULT_MARGIN  # 'uncertain': top-1 − top-2 below this
    flicker_window: int = DEFAULT_FLICKER_WINDOW  # 'flicker': frames of the camera looked back over
    random_rate: float = DEFAULT_RANDOM_RATE  # 'random': probability of keeping any frame
    frame_side: int = FRAME_SIDE  # longest side of the saved full frame
    jpeg_quality: int = 90
    queue_frames: int = 16  # writer queue bound (frames) ...
    queue_mb: float = 64.0  # ... and bound on the pixels it holds
    seed: int | None = None  # for 'random' (None: a fresh sequence each run)
    close_timeout_s: float = 30.0  # how long close() waits for the writer to empty its queue

    def __post_init__(self) -> None:
        from edgefg.errors import EdgefgError

        self.directory = Path(self.directory)
        self.policies = parse_policies(self.policies)
        checks = [(self.max_mb > 0, "--collect-max-mb must be > 0"), (self.per_hour >= 0, "--collect-per-hour must be ≥ 0"),
                  (0 <= self.margin <= 1, "--collect-margin must be within 0-1"), (self.flicker_window >= 3, "--collect-flicker-window must be ≥ 3"),
                  (0 <= self.random_rate <= 1, "--collect-random-rate must be within 0-1"), (self.frame_side >= 16, "frame_side must be ≥ 16"),
                  (self.queue_frames >= 1, "queue_frames must be ≥ 1")]
        for ok, message in checks:
            if not ok:
                raise EdgefgError(message)


def policies_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    from edgefg.errors import EdgefgError

    try:
        return parse_policies(value)
    except EdgefgError as exc:
        raise click.BadParameter(f"{exc.message}; {exc.hint}") from None


OPTIONS = [
    click.option("--collect", "collect", type=click.Path(path_type=Path, file_okay=False),
                 help="Keep the frames worth labelling in DIR (crops the model saw + downscaled full frames + JSON sidecars; "
                      "a bounded ring; feeds compress/tune --agreement-data DIR and `edgefg collect export`)."),
    click.option("--collect-policy", callback=policies_callback, metavar="P[,P…]",
                 help="Which frames: uncertain (top-1 − top-2 < --collect-margin), flicker (raw top-1 switching class), "
                      f"novel (decided 'unknown'), random (--collect-random-rate)  [default: {','.join(POLICIES)}]"),
    click.option("--collect-max-mb", type=click.FloatRange(0, min_open=True), help=f"Bound of the collect folder; the oldest frames go first  [default: {DEFAULT_MAX_MB:g}]"),
    click.option("--collect-per-hour", type=click.IntRange(0), help=f"Frames kept per camera per hour (token bucket, a minute's worth of burst); 0 = no limit  [default: {DEFAULT_PER_HOUR}]"),
    click.option("--collect-margin", type=click.FloatRange(0, 1), help=f"'uncertain': keep frames whose top-1 − top-2 probability is below this  [default: {DEFAULT_MARGIN:g}]"),
    click.option("--collect-flicker-window", type=click.IntRange(3, 10_000),
                 help=f"'flicker': keep a frame whose raw top-1 changed class for the second time within the camera's last N frames  [default: {DEFAULT_FLICKER_WINDOW}]"),
    click.option("--collect-random-rate", type=click.FloatRange(0, 1), help=f"'random': fraction of all frames sampled  [default: {DEFAULT_RANDOM_RATE:g}]"),
]
_CLI_FIELDS = {"collect_policy": "policies", "collect_max_mb": "max_mb", "collect_per_hour": "per_hour", "collect_margin": "margin",
               "collect_flicker_window": "flicker_window", "collect_random_rate": "random_rate"}


def options_from_cli(values: dict[str, Any]) -> CollectOptions | None:
    """The ``--collect*`` values of ``edgefg run`` → options (None without ``--collect``)."""
    given = {field_: values[key] for key, field_ in _CLI_FIELDS.items() if values.get(key) is not None}
    if values.get("collect") is None:
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in _CLI_FIELDS if values.get(k) is not None)
            raise click.UsageError(f"{flags} {'needs' if len(given) == 1 else 'need'} --collect DIR")
        return None
    return CollectOptions(Path(values["collect"]), **given)


# -- choosing frames --------------------------------------------------------------------------
def margin_and_top(probs: Any, k: int = TOP) -> tuple[float, list[int]]:
    """(top-1 − top-2 probability, the indices of the ``k`` highest probabilities, best first)."""
    n = len(probs)
    k = min(k, n)
    idx = probs.argpartition(n - k)[n - k:] if k < n else probs.argsort()
    top = sorted((int(i) for i in idx), key=lambda i: -float(probs[i]))
    margin = float(probs[top[0]]) - (float(probs[top[1]]) if len(top) > 1 else 0.0)
    return margin, top


class Selector:
    """The policies: which frames of each camera to keep (no state but the flicker windows and the RNG)."""

    def __init__(self, policies: Sequence[str], margin: float = DEFAULT_MARGIN, flicker_window: int = DEFAULT_FLICKER_WINDOW,
                 random_rate: float = DEFAULT_RANDOM_RATE, rng: random.Random | None = None) -> None:
        self.policies = tuple(policies)
        self.margin = margin
        self.window = flicker_window
        self.random_rate = random_rate
        self.rng = rng or random.Random()
        self._history: dict[str, deque[int]] = {}

    def choose(self, camera: str, probs: Any, decided: str) -> tuple[list[str], float, list[int]]:
        """(policies that want this frame, its margin, its top-5 class indices)."""
        margin, top = margin_and_top(probs)
        chosen: list[str] = []
        for p in self.policies:
            if p == "uncertain" and margin < self.margin:
                chosen.append(p)
            elif p == "novel" and decided == UNKNOWN:
                chosen.append(p)
            elif p == "random" and self.rng.random() < self.random_rate:
                chosen.append(p)
            elif p == "flicker" and self._flicker(camera, top[0]):
                chosen.append(p)
        return chosen, margin, top

    def _flicker(self, camera: str, top1: int) -> bool:
        h = self._history.setdefault(camera, deque(maxlen=self.window))
        changed = bool(h) and h[-1] != top1
        h.append(top1)
        return changed and sum(a != b for a, b in zip(h, itertools.islice(h, 1, None))) >= 2

    def reset(self, camera: str) -> None:
        self._history.pop(camera, None)


class TokenBucket:
    """``per_hour`` tokens an hour, at most ``burst`` saved up (default: a minute's worth, at least 1); 0 = unlimited."""

    def __init__(self, per_hour: float, clock: Callable[[], float] = time.monotonic, burst: float | None = None) -> None:
        self.rate = per_hour / 3600.0
        self.capacity = burst if burst is not None else max(1.0, per_hour / 60.0)
        self.clock = clock
        self.tokens = self.capacity
        self.last = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# -- the ring on disk ------------------------------------------------------------------------
@dataclass
class Entry:
    """One collected frame on disk: its crop, full frame and sidecar (paths relative to DIR)."""

    id: str
    camera: str
    day: str
    time: float
    size: int
    files: list[str] = field(default_factory=list)


def _utc(t: float, fmt: str) -> str:
    ms = int(t * 1000)
    return f"{time.strftime(fmt, time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"


def frame_id(t: float, camera: str, frame: Any) -> str:
    idx = f"f{int(frame):06d}" if isinstance(frame, int) or (isinstance(frame, str) and frame.isdigit()) else "f"
    return f"{_utc(t, '%Y%m%dT%H%M%S')}-{camera}-{idx}"


def id_time(ident: str) -> float | None:
    """The UTC time an id names, or None when it is not one of ours."""
    try:
        return calendar.timegm(time.strptime(ident[:15], "%Y%m%dT%H%M%S")) + int(ident[16:19]) / 1000.0
    except (ValueError, IndexError):
        return None


def rel_paths(camera: str, day: str, ident: str) -> dict[str, str]:
    return {"crop": f"{CROPS}/{camera}/{day}/{ident}.jpg", "frame": f"{FRAMES}/{camera}/{day}/{ident}.jpg", "meta": f"{META}/{camera}/{day}/{ident}.json"}


def scan_ring(root: Path, clean: bool = False) -> list[Entry]:
    """The collected frames under ``root``, oldest first (from the files themselves: a crash leaves no index to trust).
    ``clean``: delete the temporary files of interrupted writes (only the collector that owns the folder does)."""
    items: dict[tuple[str, str, str], Entry] = {}
    for top in (CROPS, FRAMES, META):
        base = root / top
        if not base.is_dir():
            continue
        for cam_dir in sorted(base.iterdir()):
            if not cam_dir.is_dir():
                continue
            for day_dir in sorted(cam_dir.iterdir()):
                if not day_dir.is_dir():
                    continue
                for f in day_dir.iterdir():
                    if f.name.startswith("."):  # a write in progress, or an interrupted one's temporary file
                        if clean:
                            try:
                                f.unlink()
                            except OSError:
                                pass
                        continue
                    try:
                        size = f.stat().st_size
                    except OSError:
                        continue
                    key = (cam_dir.name, day_dir.name, f.stem)
                    e = items.get(key)
                    if e is None:
                        t = id_time(f.stem)
                        e = items[key] = Entry(f.stem, cam_dir.name, day_dir.name, t if t is not None else f.stat().st_mtime, 0)
                    e.size += size
                    e.files.append(f"{top}/{cam_dir.name}/{day_dir.name}/{f.name}")
    return sorted(items.values(), key=lambda e: (e.time, e.id))


def bundle_info(model: Any) -> dict[str, Any]:
    """Which bundle chose the frame: name, id (the model file's sha256, first 12 hex), target, precision, created."""
    m = getattr(model, "manifest", None)
    if m is None:
        return {}
    sha = (getattr(m, "files", None) or {}).get(getattr(m, "model_file", ""))
    from edgefg import __version__

    return {"name": m.name, "id": sha[:12] if sha else None, "model_sha256": sha, "target": getattr(m, "target", None),
            "backend": getattr(m, "backend", None), "precision": getattr(m, "precision", None), "created": getattr(m, "created", None),
            "directory": str(getattr(model, "directory", "")), "edgefg": __version__}


@dataclass
class _Job:
    camera: str
    time: float
    result: dict[str, Any]
    crop: Any
    image: Any
    top: list[tuple[str, float]]
    margin: float
    policies: list[str]
    roi: list[int] | None
    nbytes: int


class Collector:
    """The ``collect`` field output (see the module docstring). ``clock`` (wall time, seconds) is injectable for tests."""

    name = "collect"

    def __init__(self, ctx: Any, opts: CollectOptions, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.opts = opts
        self.root = Path(opts.directory)
        self.events = ctx.events
        self.clock = clock
        self.labels = list(ctx.model.labels)
        self.bundle = bundle_info(ctx.model)
        self.selector = Selector(opts.policies, opts.margin, opts.flicker_window, opts.random_rate, random.Random(opts.seed))
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._files = 0
        self._queued_bytes = 0
        self._max_bytes = int(opts.max_mb * 1e6)
        self._max_queued = int(opts.queue_mb * 1e6)
        self.counts: dict[str, dict[str, int]] = {}
        for cam in ctx.cameras:
            self._cam(cam)
        self.evicted = 0
        self.errors = 0
        self.last_error: str | None = None
        self._last_error_event = -1e18
        self._ready = False
        self._summary: dict[str, Any] | None = None
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=opts.queue_frames)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefg-collect", daemon=True)
        self._thread.start()

    # -- the pipeline thread (must never block) ---------------------------------------------
    def _cam(self, camera: str) -> dict[str, int]:
        c = self.counts.get(camera)
        if c is None:
            c = self.counts[camera] = {"kept": 0, **{p: 0 for p in self.opts.policies}, "busy": 0, "rate": 0, "error": 0}
        return c

    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        probs, image = getattr(frame, "probabilities", None), getattr(frame, "image", None)
        if probs is None or image is None:
            return
        policies, margin, top = self.selector.choose(camera, probs, result.get("label", ""))
        if not policies:
            return
        nbytes = int(getattr(image, "nbytes", 0))
        with self._lock:
            c = self._cam(camera)
            if self._queue.full() or (self._queued_bytes and self._queued_bytes + nbytes > self._max_queued):
                c["busy"] += 1
                return
        bucket = self._buckets.get(camera)
        if bucket is None:
            bucket = self._buckets[camera] = TokenBucket(self.opts.per_hour, self.clock)
        if not bucket.take():
            with self._lock:
                c["rate"] += 1
            return
        box = self.ctx.rois.get(camera) if getattr(self.ctx, "rois", None) else None
        roi = None
        if box is not None:
            try:
                roi = [int(v) for v in box(image.shape)]
            except Exception:
                roi = None
        job = _Job(camera, self.clock(), {k: result.get(k) for k in ("frame", "timestamp", "source", "label", "score")},
                   self.ctx.crop(camera, image), image, [(self.labels[i], round(float(probs[i]), 6)) for i in top], round(margin, 6),
                   policies, roi, nbytes)
        with self._lock:
            try:
                self._queue.put_nowait(job)
                self._queued_bytes += nbytes
            except queue.Full:
                c["busy"] += 1

    def camera_ended(self, camera: str) -> None:
        self.selector.reset(camera)

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        if WRITER_NICE and hasattr(os, "setpriority"):  # inference first: on Linux a thread has its own nice value
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICE))
            except (OSError, AttributeError):
                pass
        try:
            self._prepare()
        except Exception as exc:  # retried before every write
            self._error(exc, None)
        while True:
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            with self._lock:
                self._queued_bytes -= job.nbytes
            try:
                if not self._ready:
                    self._prepare()
                self._write(job)
            except Exception as exc:  # a full disk, a vanished mount, an unencodable crop: count it, carry on
                try:
                    self._error(exc, job.camera)
                except Exception:  # counting must not end the writer thread either (later frames would pile up as busy)
                    pass
            finally:
                self._queue.task_done()

    def _prepare(self) -> None:
        """Create DIR and read what earlier runs left there (the ring carries on across restarts)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(self.root))
        entries = scan_ring(self.root, clean=True)
        with self._lock:
            self._entries = deque(entries)
            self._bytes = sum(e.size for e in entries)
            self._files = sum(len(e.files) for e in entries)
            self._ready = True

    def _error(self, exc: BaseException, camera: str | None, count: bool = True) -> None:
        message = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename else \
            (exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}")
        with self._lock:
            if count:
                self.errors += 1
                if camera is not None:
                    self._cam(camera)["error"] += 1
            self.last_error = message
            now = time.monotonic()
            emit = now - self._last_error_event >= ERROR_EVERY_S
            if emit:
                self._last_error_event = now
            errors = self.errors
        if emit:
            try:
                self.events.emit("collect_error", directory=str(self.root), error=message, errors=errors,
                                 hint="make the --collect folder writable (or free space): frames are counted as dropped until then, the camera goes on")
            except Exception:  # a broken event log (or its listener) must not stop the writer
                pass

    def _write(self, job: _Job) -> None:
        import cv2

        day = time.strftime("%Y-%m-%d", time.gmtime(int(job.time * 1000) // 1000))
        ident = frame_id(job.time, job.camera, job.result.get("frame"))
        rels = rel_paths(job.camera, day, ident)
        n = 1
        while (self.root / rels["meta"]).exists() or (self.root / rels["crop"]).exists():
            n += 1
            rels = rel_paths(job.camera, day, f"{ident}-{n}")
        ident = Path(rels["meta"]).stem
        params = [cv2.IMWRITE_JPEG_QUALITY, int(self.opts.jpeg_quality)]
        ok1, crop_jpg = cv2.imencode(".jpg", job.crop, params)
        small = downscale(job.image, self.opts.frame_side)
        ok2, frame_jpg = (ok1, crop_jpg) if small is job.crop else cv2.imencode(".jpg", small, params)  # no ROI, a small frame: the same picture
        if not (ok1 and ok2):
            raise ValueError("JPEG encoding failed")
        h, w = job.image.shape[:2]
        ch, cw = job.crop.shape[:2]
        meta = {
            "id": ident, "camera": job.camera, "time": round(job.time, 3),
            "time_utc": _utc(job.time, "%Y-%m-%dT%H:%M:%S"),
            "policies": job.policies, "margin": job.margin,
            "top": [{"label": lab, "score": s} for lab, s in job.top],
            "decided": {"label": job.result.get("label"), "score": job.result.get("score")},
            "frame": job.result.get("frame"), "frame_timestamp": job.result.get("timestamp"), "source": job.result.get("source"),
            "roi": job.roi, "frame_size": [w, h], "crop_size": [cw, ch], "saved_frame_size": [int(small.shape[1]), int(small.shape[0])],
            "files": {"crop": rels["crop"], "frame": rels["frame"]},
            "bundle": self.bundle,
            "collect": {"policies": list(self.opts.policies), "margin": self.opts.margin, "flicker_window": self.opts.flicker_window,
                        "random_rate": self.opts.random_rate, "per_hour": self.opts.per_hour},
        }
        blobs = [(rels["crop"], crop_jpg.tobytes()), (rels["frame"], frame_jpg.tobytes()),
                 (rels["meta"], (json.dumps(meta, indent=1) + "\n").encode("utf-8"))]  # the sidecar last: an entry is whole once it is there
        size = sum(len(b) for _, b in blobs)
        self._make_room(size)
        written: list[Path] = []
        try:
            for rel, data in blobs:
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(path, data)  # hidden temporary + rename: rsync, tar and scanners never see half a file
                written.append(path)
        except BaseException:
            for p in written:
                try:
                    p.unlink()
                except OSError:
                    pass
            raise
        with self._lock:
            self._entries.append(Entry(ident, job.camera, day, job.time, size, [r for r, _ in blobs]))
            self._bytes += size
            self._files += len(blobs)
            c = self._cam(job.camera)
            c["kept"] += 1
            for policy in job.policies:
                c[policy] = c.get(policy, 0) + 1

    def _make_room(self, size: int) -> None:
        """Delete the oldest frames until ``size`` more bytes fit the bound (a frame larger than the bound alone is still kept)."""
        victims: list[Entry] = []
        with self._lock:
            while self._entries and self._bytes + size > self._max_bytes:
                e = self._entries.popleft()
                self._bytes -= e.size
                self._files -= len(e.files)
                self.evicted += 1
                victims.append(e)
        for e in victims:
            for rel in sorted(e.files, key=lambda r: not r.startswith(META)):  # the sidecar first: a half-deleted entry is no entry
                try:
                    (self.root / rel).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self._error(exc, None)
                try:
                    (self.root / rel).parent.rmdir()  # the day folder, once empty
                except OSError:
                    pass

    # -- end, stats, metrics, routes --------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the writer has handled every queued frame (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self) -> dict[str, Any]:
        if self._summary is not None:
            return self._summary
        self._closing.set()
        self._thread.join(self.opts.close_timeout_s)
        unwritten = self._queue.qsize() if self._thread.is_alive() else 0
        with self._lock:
            s: dict[str, Any] = {
                "directory": str(self.root), "kept": sum(c["kept"] for c in self.counts.values()),
                "by_policy": {p: sum(c.get(p, 0) for c in self.counts.values()) for p in self.opts.policies},
                "dropped": {r: sum(c[r] for c in self.counts.values()) for r in ("busy", "rate", "error")},
                "errors": self.errors, "evicted": self.evicted, "bytes": self._bytes, "files": self._files,
                "cameras": {cam: dict(c) for cam, c in self.counts.items()},
            }
        if self.last_error:
            s["last_error"] = self.last_error
        if unwritten:
            s["unwritten"] = unwritten
        self._summary = s
        return s

    def stats(self) -> dict[str, Any]:
        with self._lock:
            cams = {cam: {"kept": c["kept"], **{p: c.get(p, 0) for p in self.opts.policies}, "dropped": c["busy"] + c["rate"] + c["error"]}
                    for cam, c in self.counts.items()}
            summary = {"kept": sum(c["kept"] for c in self.counts.values()), "dropped_busy": sum(c["busy"] for c in self.counts.values()),
                       "dropped_rate": sum(c["rate"] for c in self.counts.values()), "errors": self.errors,
                       "disk_mb": round(self._bytes / 1e6, 3), "files": self._files, "queue": self._queue.qsize()}
        return {"summary": summary, "cameras": cams}

    def metrics(self) -> list[tuple[str, str, str, list[tuple[dict[str, Any], float]]]]:
        with self._lock:
            counts = {cam: dict(c) for cam, c in self.counts.items()}
            disk, files, depth, evicted, errors = self._bytes, self._files, self._queue.qsize(), self.evicted, self.errors
        return [
            ("collect_frames_total", "counter", "Frames written to the collect folder, per camera and per policy that chose them (a frame two policies chose counts for both).",
             [({"camera": cam, "policy": p}, c.get(p, 0)) for cam, c in counts.items() for p in self.opts.policies]),
            ("collect_saved_frames_total", "counter", "Frames written to the collect folder.", [({"camera": cam}, c["kept"]) for cam, c in counts.items()]),
            ("collect_dropped_frames_total", "counter", "Frames a policy chose that were not written: busy (writer queue full), rate (per-hour limit), error (write failed).",
             [({"camera": cam, "reason": r}, c[r]) for cam, c in counts.items() for r in ("busy", "rate", "error")]),
            ("collect_errors_total", "counter", "Failed collect-folder operations (writes, deletions, creating the folder).", [({}, errors)]),
            ("collect_evicted_frames_total", "counter", "Oldest frames deleted to keep the folder within --collect-max-mb.", [({}, evicted)]),
            ("collect_disk_bytes", "gauge", "Bytes of collected files on disk.", [({}, disk)]),
            ("collect_files", "gauge", "Collected files on disk (crops, full frames, sidecars).", [({}, files)]),
            ("collect_queue_frames", "gauge", "Frames waiting for the collect writer thread.", [({}, depth)]),
        ]

    def routes(self) -> dict[str, Any]:
        return {"/collect.tar": self.tar_route}

    def entries(self, since: float | None = None, camera: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries if (since is None or e.time >= since) and (camera is None or e.camera == camera)]

    def tar_route(self, params: dict[str, str]) -> tuple[int, Any, str]:
        since = None
        if params.get("since"):
            try:
                since = float(params["since"])
                if not math.isfinite(since):
                    raise ValueError
            except ValueError:
                return 400, json.dumps({"error": f"bad since '{params['since']}'", "hint": "since=UNIX_TIME in seconds, e.g. since=1714550000"}), "application/json"
        return 200, stream_tar(self.root, self.entries(since, params.get("camera") or None)), "application/x-tar"


def downscale(image: Any, side: int) -> Any:
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    s = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


class _Pending:
    """The write end tarfile's stream mode writes into; the HTTP thread takes the bytes out."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def stream_tar(root: Path, entries: Iterable[Entry]) -> Iterator[bytes]:
    """A tar (``tarfile`` stream mode, no seeking) of ``entries``' files under their DIR-relative names, chunk by chunk.
    Files deleted by the ring since the list was taken are left out."""
    sink = _Pending()
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
    finished = False
    try:
        for e in entries:
            for rel in e.files:
                try:
                    fh = open(root / rel, "rb")
                except OSError:
                    continue
                with fh:
                    st = os.fstat(fh.fileno())
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
                    tar.addfile(info, fh)
                chunk = sink.take()
                if chunk:
                    yield chunk
        tar.close()
        finished = True
        yield sink.take()
    finally:
        if not finished:
            try:
                tar.close()
            except Exception:
                pass


def open_output(ctx: Any, options: CollectOptions) -> Collector:
    return Collector(ctx, options)


# -- reading a collected folder (edgefg collect export / stats) -------------------------------
def read_sidecars(root: str | Path, since: float | None = None, cameras: Sequence[str] | None = None,
                  policies: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The sidecars under ``root/.meta`` (oldest first) whose crop is there, filtered; and the count of unreadable ones."""
    from edgefg.errors import InputPathError

    root = Path(root)
    if not root.is_dir():
        raise InputPathError(f"collect folder '{root}' does not exist", "pass the DIR given to edgefg run --collect (or a copy of it)")
    if not (root / META).is_dir() and not (root / CROPS).is_dir():
        raise InputPathError(f"'{root}' is not a collect folder (no {CROPS}/ or {META}/ in it)", "pass the DIR given to edgefg run --collect")
    out, bad = [], 0
    for path in sorted((root / META).rglob("*.json")) if (root / META).is_dir() else []:
        if path.name.startswith("."):
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            crop = meta["files"]["crop"]
        except (OSError, ValueError, KeyError, TypeError):
            bad += 1
            continue
        if not (root / crop).is_file():
            bad += 1
            continue
        if since is not None and float(meta.get("time", 0)) < since:
            continue
        if cameras and meta.get("camera") not in cameras:
            continue
        if policies and not set(meta.get("policies", [])) & set(policies):
            continue
        out.append(meta)
    out.sort(key=lambda m: (m.get("time", 0), m.get("id", "")))
    return out, bad


def folder_name(label: str) -> str:
    """A class name as a folder name (path separators and a leading dot replaced)."""
    name = label.replace("/", "_").replace("\\", "_").replace("\0", "_")
    return "_" + name[1:] if name.startswith(".") else name or "_"


CSV_COLUMNS = ["file", "camera", "time", "policy", "decided", "margin",
               *[c for k in range(1, TOP + 1) for c in (f"suggestion_{k}", f"score_{k}")], "frame", "source", "id", "full_frame"]


def export_queue(root: str | Path, out: str | Path, by: str = "none", since: float | None = None, cameras: Sequence[str] | None = None,
                 policies: Sequence[str] | None = None, with_frames: bool = False) -> dict[str, Any]:
    """A labelling queue in ``out``: the crops (flat, or in folders named by the top-1 suggestion with ``by="suggestion"``)
    and ``queue.csv`` (file, camera, time, policy, suggested top-5 with scores …). Sorted into class folders (the
    model's label names) it is an ImageFolder for ``--val-data``. ``with_frames``: the full frames too, in ``out/.frames/``."""
    from edgefg.errors import EdgefgError, OutputExistsError

    if by not in ("none", "suggestion"):
        raise EdgefgError(f"bad --by '{by}'", "use none or suggestion")
    root, out = Path(root), Path(out)
    metas, bad = read_sidecars(root, since, cameras, policies)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"'{out}' already exists and is not empty", "export into a new folder (use --since to take only the newer frames)")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in metas:
        top = m.get("top") or []
        folder = folder_name(top[0]["label"]) if by == "suggestion" and top else ""
        name = f"{m['id']}.jpg"
        rel = f"{folder}/{name}" if folder else name
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / m["files"]["crop"], out / rel)
        full = ""
        src_frame = root / m.get("files", {}).get("frame", "")
        if with_frames and src_frame.is_file():
            full = f"{FRAMES}/{name}"
            (out / FRAMES).mkdir(exist_ok=True)
            shutil.copyfile(src_frame, out / full)
        row = {"file": rel, "camera": m.get("camera"), "time": m.get("time_utc") or m.get("time"), "policy": "+".join(m.get("policies", [])),
               "decided": (m.get("decided") or {}).get("label"), "margin": m.get("margin"), "frame": m.get("frame"), "source": m.get("source"),
               "id": m["id"], "full_frame": full}
        for k in range(TOP):
            row[f"suggestion_{k + 1}"] = top[k]["label"] if k < len(top) else ""
            row[f"score_{k + 1}"] = top[k]["score"] if k < len(top) else ""
        rows.append(row)
    with open(out / "queue.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return {"exported": len(rows), "unreadable": bad, "csv": str(out / "queue.csv"), "by": by,
            "folders": sorted({r["file"].split("/")[0] for r in rows if "/" in r["file"]})}


def collect_stats(root: str | Path) -> dict[str, Any]:
    """Counts of a collect folder: per policy, camera and suggested (top-1) class, bytes, time range."""
    from collections import Counter

    root = Path(root)
    metas, bad = read_sidecars(root)
    by_policy: Counter[str] = Counter()
    by_camera: Counter[str] = Counter()
    by_class: Counter[str] = Counter()
    for m in metas:
        by_policy.update(m.get("policies", []))
        by_camera[m.get("camera", "?")] += 1
        if m.get("top"):
            by_class[m["top"][0]["label"]] += 1
    entries = scan_ring(root) if root.is_dir() else []
    return {"directory": str(root), "frames": len(metas), "unreadable": bad, "bytes": sum(e.size for e in entries),
            "files": sum(len(e.files) for e in entries),
            "first": metas[0].get("time_utc") if metas else None, "last": metas[-1].get("time_utc") if metas else None,
            "by_policy": dict(by_policy.most_common()), "by_camera": dict(by_camera.most_common()), "by_suggestion": dict(by_class.most_common())}
