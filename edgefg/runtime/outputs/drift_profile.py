"""The drift reference profile: what a bundle's inputs and outputs look like on known-good images.

Written by ``edgefg deploy`` into the bundle (``drift_reference.json``, covered by the bundle's
checksums and signature) and by ``edgefg validate BUNDLE --data DIR --drift-reference OUT.json`` from
any folder — e.g. a few hundred frames from the camera itself, the best reference there is. ``edgefg
run`` compares a rolling window of the same signals with it (:mod:`edgefg.runtime.outputs.drift`). numpy +
OpenCV; no torch.

Signals, per image (label-free):

``class``       the model's raw top-1 class (argmax of the probabilities, before smoothing/open set)
``confidence``  top-1 probability, 100 bins of 0.01 on [0, 1]
``margin``      top-1 − top-2 probability, 100 bins of 0.01
``luminance``   mean grey level (BT.601) of the crop, 64 bins of 4 on [0, 256)
``sharpness``   log10(1 + variance of the Laplacian) of the crop at a fixed scale, 100 bins of 0.05 on [0, 5)

plus the joint (confidence, margin) histogram (sparse), from which the runtime derives the open-set
rate at its own ``--min-confidence``/``--min-margin`` (to the 0.01 bin). The input signals are
measured on the crop scaled so that its short side is :data:`SIGNAL_SIDE` pixels (box filter, aspect
kept), so that the Laplacian sees the same scale whatever the camera's resolution.

Format (JSON)::

    {"format": "edgefg-drift-reference", "version": 1, "created": "...", "source": "...", "images": N,
     "skipped": K, "model": {"name", "precision", "backend", "target"}, "labels": [...],
     "signal_image": {"short_side": 128, "gray": "BT.601", "sharpness": "log10(1+var(Laplacian 3x3))"},
     "classes": [count per label], "histograms": {NAME: {"lo", "hi", "bins", "counts"}},
     "confidence_margin": [[conf_bin, margin_bin, count], ...]}
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import ClassMismatchError, DataError, EdgefgError
from edgefg.outputs import write_text

PROFILE_NAME = "drift_reference.json"
FORMAT = "edgefg-drift-reference"
VERSION = 1
SIGNAL_SIDE = 128
SIGNAL_MAX_ASPECT = 8  # a longer side is cropped to 8 × the short one (memory: a 2×16000 image would scale to 128×1 024 000)
# name -> (lo, hi, bins); values outside [lo, hi) go into the end bins
BINS: dict[str, tuple[float, float, int]] = {
    "confidence": (0.0, 1.0, 100),
    "margin": (0.0, 1.0, 100),
    "luminance": (0.0, 256.0, 64),
    "sharpness": (0.0, 5.0, 100),
}
CONTINUOUS = tuple(BINS)
HOW_TO = "edgefg validate BUNDLE --data DIR --drift-reference drift.json (DIR: a few hundred good frames, ideally from this camera)"
MAX_PROFILE_BYTES = 16 << 20


# -- per-image signals ----------------------------------------------------------------------------
def signal_image(image: np.ndarray) -> np.ndarray:
    """The crop as grey, its short side scaled to :data:`SIGNAL_SIDE` (an integer box filter first,
    which is cheap on a large frame: ~1 ms for 1080p on one core)."""
    import cv2

    if image.ndim == 3:
        g = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY) if image.shape[2] != 1 else image[:, :, 0]
    else:
        g = image
    if g.dtype != np.uint8:
        g = np.clip(g, 0, 255).astype(np.uint8)
    h, w = g.shape[:2]
    f = min(h, w) // SIGNAL_SIDE
    if f > 1:  # exact block averages: an integer-factor INTER_AREA
        h, w = h - h % f, w - w % f
        g = cv2.resize(g[:h, :w], (w // f, h // f), interpolation=cv2.INTER_AREA)
        h, w = g.shape[:2]
    s = SIGNAL_SIDE / max(1, min(h, w))
    long_max = max(1, int(SIGNAL_MAX_ASPECT * min(h, w)))  # a thin strip: its centre only, so the scaled image stays small
    if h > long_max or w > long_max:
        y, x = (h - min(h, long_max)) // 2, (w - min(w, long_max)) // 2
        g = g[y : y + min(h, long_max), x : x + min(w, long_max)]
        h, w = g.shape[:2]
    if s != 1.0:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return g


def input_signals(image: np.ndarray) -> tuple[float, float]:
    """(mean luminance 0–255, log10(1 + variance of the Laplacian)) of a BGR crop."""
    import cv2

    g = signal_image(image)
    lum = float(cv2.mean(g)[0])
    _, sd = cv2.meanStdDev(cv2.Laplacian(g, cv2.CV_32F))
    return lum, math.log10(1.0 + float(sd[0, 0]) ** 2)


def output_signals(probs: np.ndarray) -> tuple[int, float, float]:
    """One probability vector → (top-1 index, top-1 probability, top-1 − top-2), as open-set rejection computes them."""
    if probs.shape[0] == 1:
        return 0, float(probs[0]), float(probs[0])
    two = np.argpartition(-probs, 1)[:2]
    a, b = (int(two[0]), int(two[1])) if probs[two[0]] >= probs[two[1]] else (int(two[1]), int(two[0]))
    conf = float(probs[a])
    return a, conf, conf - float(probs[b])


def bin_of(name: str, value: float) -> int:
    lo, hi, n = BINS[name]
    i = int((value - lo) * n / (hi - lo)) if value == value else 0  # NaN → bin 0
    return 0 if i < 0 else n - 1 if i >= n else i


def bin_centres(name: str) -> np.ndarray:
    lo, hi, n = BINS[name]
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


# -- building ---------------------------------------------------------------------------------------
class ProfileBuilder:
    """Accumulates the signals of reference images (one at a time, or scores + images)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.classes = np.zeros(len(self.labels), np.int64)
        self.hist = {name: np.zeros(BINS[name][2], np.int64) for name in BINS}
        self.joint: dict[tuple[int, int], int] = {}
        self.images = 0
        self.skipped = 0

    def add(self, image: np.ndarray, probs: np.ndarray) -> None:
        lum, sharp = input_signals(image)
        top, conf, margin = output_signals(np.asarray(probs, np.float64))
        ci, mi = bin_of("confidence", conf), bin_of("margin", margin)
        self.classes[top] += 1
        for name, v in (("luminance", lum), ("sharpness", sharp)):
            self.hist[name][bin_of(name, v)] += 1
        self.hist["confidence"][ci] += 1
        self.hist["margin"][mi] += 1
        self.joint[(ci, mi)] = self.joint.get((ci, mi), 0) + 1
        self.images += 1

    def to_dict(self, source: str, manifest: Any = None) -> dict[str, Any]:
        model = {}
        if manifest is not None:
            model = {k: getattr(manifest, k, None) for k in ("name", "precision", "backend", "target")}
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "images": int(self.images),
            "skipped": int(self.skipped),
            "model": model,
            "labels": self.labels,
            "signal_image": {"short_side": SIGNAL_SIDE, "gray": "BT.601", "sharpness": "log10(1+var(Laplacian 3x3))"},
            "classes": [int(c) for c in self.classes],
            "histograms": {name: {"lo": BINS[name][0], "hi": BINS[name][1], "bins": BINS[name][2], "counts": [int(c) for c in self.hist[name]]}
                           for name in BINS},
            "confidence_margin": [[int(i), int(j), int(c)] for (i, j), c in sorted(self.joint.items())],
        }


def build_profile(model: Any, paths: Iterable[str | Path], source: str, scores: np.ndarray | None = None, batch_size: int = 16,
                  manifest: Any = None) -> dict[str, Any]:
    """Profile of ``model`` (a :class:`~edgefg.runtime.engine.bundle.LoadedBundle`) on the images at ``paths``.
    ``scores``: the model's scores for those very images, already computed (e.g. by validate): then the
    images are only decoded for the input signals, not run through the model again. ``manifest``: the
    one to describe the model by (default ``model.manifest``; deploy passes the bundle's, not its host stand-in's)."""
    from edgefg.runtime.engine.postprocess import to_probabilities
    from edgefg.runtime.engine.preprocess import read_image

    activation = model.manifest.output_activation
    b = ProfileBuilder(model.labels)
    paths = list(paths)
    if scores is not None:
        if len(scores) != len(paths):
            raise DataError(f"{len(scores)} scores for {len(paths)} images")
        probs = to_probabilities(np.asarray(scores).reshape(len(paths), -1), activation)
        for p, row in zip(paths, probs):
            try:
                b.add(read_image(p), row)
            except DataError:
                b.skipped += 1
        if b.images == 0:
            raise DataError(f"no readable images for the drift reference ({source})")
        return b.to_dict(source, manifest or model.manifest)
    batch_size = 1 if getattr(model.backend, "static_batch", None) == 1 else batch_size
    images: list[np.ndarray] = []
    prepared: list[np.ndarray] = []

    def flush() -> None:
        if not images:
            return
        probs = to_probabilities(model.scores(np.stack(prepared)), activation)
        for img, row in zip(images, probs):
            b.add(img, row)
        images.clear()
        prepared.clear()

    for p in paths:
        try:
            img = read_image(p)
            x = model.prepare(img)
        except DataError:
            b.skipped += 1
            continue
        images.append(img)
        prepared.append(x)
        if len(images) == batch_size:
            flush()
    flush()
    if b.images == 0:
        raise DataError(f"no readable images for the drift reference ({source})")
    return b.to_dict(source, manifest or model.manifest)


def write_profile(path: str | Path, profile: dict[str, Any]) -> Path:
    return write_text(path, json.dumps(profile, separators=(",", ":")) + "\n")


# -- reading ----------------------------------------------------------------------------------------
class Profile:
    """A checked reference profile: counts as numpy arrays."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.images = int(data["images"])
        self.source = str(data.get("source", ""))
        self.labels = list(data["labels"])
        self.classes = np.asarray(data["classes"], np.float64)
        self.hist = {name: np.asarray(data["histograms"][name]["counts"], np.float64) for name in BINS}
        n = BINS["confidence"][2]
        self.joint = np.zeros((n, BINS["margin"][2]), np.float64)
        for i, j, c in data.get("confidence_margin", []):
            self.joint[int(i), int(j)] += float(c)

    def unknown_rate(self, min_confidence: float, min_margin: float) -> float:
        """Reference open-set rate at these thresholds (to the 0.01 bin: a bin counts when its centre is below)."""
        conf_low = bin_centres("confidence") < min_confidence
        margin_low = bin_centres("margin") < min_margin
        mask = conf_low[:, None] | margin_low[None, :]
        total = self.joint.sum()
        return float(self.joint[mask].sum() / total) if total else 0.0


def _bad(where: str, what: str) -> EdgefgError:
    return DataError(f"drift reference '{where}' {what}", f"re-create it for this bundle: {HOW_TO}")


def parse_profile(raw: bytes, where: str, labels: Sequence[str]) -> Profile:
    """Check a profile's bytes against the bundle's ``labels``; a clear error for anything off."""
    if len(raw) > MAX_PROFILE_BYTES:
        raise _bad(where, f"is larger than {MAX_PROFILE_BYTES >> 20} MB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad(where, f"is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(where, f"is not an edgefg drift reference (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise _bad(where, f"has version {data.get('version')!r}; this edgefg reads version {VERSION}")
    try:
        plabels = data["labels"]
        if not isinstance(plabels, list) or not all(isinstance(x, str) for x in plabels):
            raise TypeError("labels")
        if list(plabels) != list(labels):
            if len(plabels) != len(labels):
                detail = f"{len(plabels)} classes, the bundle has {len(labels)}"
            else:
                diff = next(i for i, (a, b) in enumerate(zip(plabels, labels)) if a != b)
                detail = f"label {diff} is '{plabels[diff]}', the bundle's is '{labels[diff]}'"
            raise ClassMismatchError(f"drift reference '{where}' was made for another model ({detail})", f"make one for this bundle: {HOW_TO}")
        if len(data["classes"]) != len(labels):
            raise _bad(where, f"has {len(data['classes'])} class counts for {len(labels)} labels")
        for name, (lo, hi, n) in BINS.items():
            h = data["histograms"][name]
            if (h.get("lo"), h.get("hi"), h.get("bins"), len(h["counts"])) != (lo, hi, n, n):
                raise _bad(where, f"has a '{name}' histogram with other bins than this edgefg uses ({n} bins on [{lo:g}, {hi:g}))")
        images = int(data["images"])
        counts = [np.asarray(data["classes"], np.float64)] + [np.asarray(data["histograms"][k]["counts"], np.float64) for k in BINS]
        if images < 1 or any((c < 0).any() or int(c.sum()) != images for c in counts):
            raise _bad(where, f"is inconsistent: its histograms do not each count its {images} images")
        for i, j, c in data.get("confidence_margin", []):
            if not (0 <= int(i) < BINS["confidence"][2] and 0 <= int(j) < BINS["margin"][2] and int(c) >= 0):
                raise ValueError("confidence_margin")
        return Profile(data, where)
    except EdgefgError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad(where, f"is missing or has a malformed field ({type(exc).__name__}: {exc})") from None


def load_profile(path: str | Path, labels: Sequence[str]) -> Profile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EdgefgError(f"drift reference '{path}' does not exist", f"make one with: {HOW_TO}") from None
    except OSError as exc:
        raise EdgefgError(f"cannot read drift reference '{path}': {exc.strerror or exc}") from None
    return parse_profile(raw, str(path), labels)


def bundle_profile(model: Any) -> Profile | None:
    """The profile ``deploy`` wrote into the bundle (checked against its recorded checksum), or None."""
    import hashlib

    from edgefg.errors import ChecksumError
    from edgefg.trust.paths import open_confined

    directory = Path(model.directory)
    try:
        with open_confined(directory, PROFILE_NAME) as fh:
            raw = fh.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        return None
    expected = (model.manifest.files or {}).get(PROFILE_NAME)
    if expected is None:
        raise ChecksumError(f"'{directory / PROFILE_NAME}' is not covered by the bundle's checksums (added after deploy?)",
                            "re-deploy the bundle, or pass that file with --drift-reference if you trust it")
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ChecksumError(f"checksum mismatch for '{directory / PROFILE_NAME}'", "the file was modified; re-copy or re-deploy the bundle")
    return parse_profile(raw, str(directory / PROFILE_NAME), model.labels)
