"""Drift on the device, without labels, and live agreement with a shadow model (field output ``drift``).

**Drift.** The bundle carries a reference profile (``drift_reference.json``, written by ``edgefg deploy``;
or ``--drift-reference FILE`` from ``edgefg validate BUNDLE --data DIR --drift-reference FILE``, best made
from good frames of the camera itself; see :mod:`edgefg.runtime.outputs.drift_profile`). Per camera a rolling
window of the last ``--drift-window`` frames (500) of the same label-free signals — raw top-1 class,
top-1 confidence, top-1 − top-2 margin, open-set rate at this run's ``--min-confidence``/``--min-margin``
(when either is set), crop luminance and sharpness — is compared with the reference every
``--drift-every`` frames (25), once ``--drift-warmup`` frames (100) are in the window.

Score: the population stability index, PSI = Σ (p − q) · ln(p / q) over bins, p the window's share and
q the reference's, each bin given a pseudo-count of 0.5 (Jeffreys) so that an empty bin never yields
log 0. The continuous signals use the reference's fine histograms merged into ≤ 10 bins of equal
reference mass (deciles) over the reference's range, plus a bin below and one above it (so values the
reference never showed — a dark or blurred stream — count at once); the class signal one bin per
class; the open-set rate two bins. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate,
> 0.25 significant; ``--drift-threshold`` (0.25) raises an alert and ``--drift-clear`` (0.1) ends it
(hysteresis). Because a finite window and a finite reference never match exactly, a signal's alert
level is never below its sampling noise: with no drift, PSI ≈ (1/n + 1/m) · χ²(k − 1) (n window frames,
m reference images, k bins), so the alert level is max(threshold, (1/n + 1/m) · χ²₀.₉₉₉₉(k − 1)) and the
clear level max(clear, (1/n + 1/m)(k − 1)) (the noise's mean), kept below half the alert level. With a
small reference (deploy's default without --data: the artifact's ≤ 32 calibration images) that floor
is high — the ``drift_monitoring`` event says so. The noise model assumes independent frames: video
frames of one scene are correlated, so a window holds fewer independent views than frames — make the
window long compared with a visit, and the reference from the camera.

Events: with the first frame ``drift_monitoring`` (reference, signals, alert levels, a note when the
reference is small) or ``drift_off`` (no profile: how to make one); ``drift`` (camera, signal, score,
threshold, what moved) when a signal's score crosses its alert level — once per crossing — and
``drift_cleared`` when it falls below its clear level (which, after a jump to values the reference
never showed, is when those frames have left the window). Prometheus:
``edgefg_drift_score{camera,signal}``, ``edgefg_drift_threshold{camera,signal}``, ``edgefg_drift_alert{camera}``,
``edgefg_drift_alerts_total{camera}``, ``edgefg_drift_window_frames{camera}``. MQTT (with --mqtt): retained
``<prefix>/<camera>/drift`` ``{"alert", "alerting", "scores", "thresholds", "window", ...}`` on every alert
change and at most every 30 s otherwise, with Home Assistant discovery of a ``binary_sensor`` (problem)
and a ``sensor`` (the largest score relative to its alert level).

**Shadow agreement.** ``--shadow BUNDLE`` (e.g. the FP32 bundle next to an INT8 one) runs on one frame in
``--shadow-every`` (10), on its own thread with a queue of 2 (frames that find it busy are dropped and
counted; the main loop never waits), with its own preprocessing on the same crop. Reported: the share of
compared frames where the main model's raw top-1 equals the shadow's, with its Wilson 95 % interval, per
camera and overall (``edgefg_shadow_agreement{camera}``, ``..._ci_low``, ``..._ci_high``,
``edgefg_shadow_frames_total``, ``edgefg_shadow_dropped_total``).

The module top imports only click and the standard library (the CLI imports it at start-up).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from edgefg.runtime.outputs.drift_profile import Profile

PSEUDO_COUNT = 0.5  # per bin, window and reference alike (Jeffreys): no log(0) for an empty bin
MAX_GROUPS = 10  # continuous signals: reference deciles
NOISE_Z = 3.719  # one-sided normal quantile of 1 - 1e-4: the sampling-noise floor of the alert level
SIGNALS = ("class", "confidence", "margin", "unknown", "luminance", "sharpness")
HOW_TO = "edgefg deploy ART --data DIR ... (writes drift_reference.json into the bundle), or edgefg validate BUNDLE --data DIR --drift-reference drift.json and run with --drift-reference drift.json"


@dataclass
class DriftOptions:
    """``drift``: None = on when a reference profile exists (the bundle's or ``reference``), True = required, False = off."""

    drift: bool | None = None
    reference: Path | None = None  # a profile file instead of the bundle's
    window: int = 500
    every: int = 25
    warmup: int | None = None  # default: min(window, max(50, window // 5))
    threshold: float = 0.25
    clear: float = 0.1
    mqtt_every_s: float = 30.0
    shadow: Path | None = None
    shadow_every: int = 10
    shadow_threads: int = 1
    shadow_queue: int = 2

    def __post_init__(self) -> None:
        from edgefg.errors import EdgefgError

        if self.window < 10:
            raise EdgefgError(f"--drift-window must be ≥ 10, got {self.window}")
        if self.every < 1 or self.shadow_every < 1 or self.shadow_queue < 1 or self.shadow_threads < 1:
            raise EdgefgError("--drift-every, --shadow-every and --shadow-threads must be ≥ 1")
        if not 0 < self.clear < self.threshold:
            raise EdgefgError(f"--drift-clear ({self.clear:g}) must be above 0 and below --drift-threshold ({self.threshold:g})",
                              "e.g. --drift-threshold 0.25 --drift-clear 0.1 (the PSI rule of thumb)")
        if self.warmup is None:
            self.warmup = min(self.window, max(50, self.window // 5))
        if not 1 <= self.warmup <= self.window:
            raise EdgefgError(f"--drift-warmup must be between 1 and --drift-window ({self.window}), got {self.warmup}")
        if self.drift is False and self.reference is not None:
            raise EdgefgError("--no-drift and --drift-reference contradict each other", "drop one of them")


_PATH = click.Path(path_type=Path)
OPTIONS = [
    click.option("--drift/--no-drift", "drift", default=None,
                 help="Label-free drift monitoring against the reference profile [default: on when the bundle (or --drift-reference) has one].",),
    click.option("--drift-reference", type=_PATH, help="Reference profile JSON (edgefg validate BUNDLE --data DIR --drift-reference FILE) instead of the bundle's."),
    click.option("--drift-window", default=500, show_default=True, type=click.IntRange(10), help="Frames per camera in the rolling drift window."),
    click.option("--drift-every", default=25, show_default=True, type=click.IntRange(1), help="Recompute the drift scores every N frames of a camera."),
    click.option("--drift-warmup", type=click.IntRange(1), help="Frames in the window before the first score [default: window/5, at least 50]."),
    click.option("--drift-threshold", default=0.25, show_default=True, type=click.FloatRange(0, min_open=True),
                 help="PSI at which a signal alerts (never below its sampling noise)."),
    click.option("--drift-clear", default=0.1, show_default=True, type=click.FloatRange(0, min_open=True), help="PSI below which an alert ends (hysteresis)."),
    click.option("--shadow", type=_PATH, help="A reference bundle (e.g. the FP32 one) run on one frame in --shadow-every on its own thread: live top-1 agreement."),
    click.option("--shadow-every", default=10, show_default=True, type=click.IntRange(1), help="Run --shadow on one frame in N (per camera)."),
    click.option("--shadow-threads", default=1, show_default=True, type=click.IntRange(1, 1024), help="Inference threads of the --shadow bundle."),
]


def options_from_cli(values: dict[str, Any]) -> DriftOptions | None:
    drift, shadow = values.get("drift"), values.get("shadow")
    if drift is False and shadow is None:
        if values.get("drift_reference") is not None:
            raise click.UsageError("--no-drift and --drift-reference contradict each other")
        return None
    return DriftOptions(drift=drift, reference=values.get("drift_reference"), window=values.get("drift_window") or 500,
                        every=values.get("drift_every") or 25, warmup=values.get("drift_warmup"),
                        threshold=values.get("drift_threshold") or 0.25, clear=values.get("drift_clear") or 0.1,
                        shadow=shadow, shadow_every=values.get("shadow_every") or 10, shadow_threads=values.get("shadow_threads") or 1)


def open_output(ctx: Any, options: DriftOptions) -> DriftOutput:
    return DriftOutput(ctx, options)


# -- statistics -----------------------------------------------------------------------------------
def chi2_quantile(df: int, z: float = NOISE_Z) -> float:
    """Upper quantile of χ²(df) at the normal quantile ``z`` (Wilson–Hilferty; within ~1 % for df ≥ 3)."""
    if df <= 0:
        return 0.0
    a = 2.0 / (9.0 * df)
    return df * max(0.0, 1.0 - a + z * math.sqrt(a)) ** 3


def psi(window: Any, reference: Any, pseudo: float = PSEUDO_COUNT) -> float:
    """Population stability index of two count vectors over the same bins (pseudo-count per bin)."""
    import numpy as np

    w = np.asarray(window, np.float64) + pseudo
    r = np.asarray(reference, np.float64) + pseudo
    p, q = w / w.sum(), r / r.sum()
    return float(((p - q) * np.log(p / q)).sum())


def equal_mass_starts(ref: Any, groups: int = MAX_GROUPS) -> Any:
    """Start indices (for ``np.add.reduceat``) of the bins compared: ≤ ``groups`` runs of adjacent fine
    bins holding about equal reference mass over the reference's range, plus one run below and one
    above it (empty in the reference), so that values the reference never showed count at once."""
    import numpy as np

    ref = np.asarray(ref, np.float64)
    nz = np.nonzero(ref > 0)[0]
    if len(nz) == 0:
        return np.asarray([0])
    lo, hi = int(nz[0]), int(nz[-1])
    inner = ref[lo : hi + 1]
    total = inner.sum()
    cum = np.cumsum(inner)
    starts = [lo]
    for i in range(len(inner) - 1):
        if len(starts) >= groups:
            break
        if cum[i] >= total * len(starts) / groups - 1e-9 and cum[i] < total - 1e-9:
            starts.append(lo + i + 1)
    return np.asarray(([0] if lo > 0 else []) + starts + ([hi + 1] if hi + 1 < len(ref) else []))


def noise_levels(k: int, n: int, m: int) -> tuple[float, float]:
    """(alert floor, mean) of PSI from sampling alone: (1/n + 1/m) · χ²(k − 1)."""
    scale = 1.0 / max(n, 1) + 1.0 / max(m, 1)
    return scale * chi2_quantile(k - 1), scale * (k - 1)


def wilson(k: int, n: int) -> tuple[float, float]:
    from edgefg.validate.metrics import wilson_interval  # numpy + math only

    return wilson_interval(k, n)


# -- the output ------------------------------------------------------------------------------------
class _Signals:
    """The layout of one window row: each signal's fine bins at an offset in one flat count vector."""

    def __init__(self, profile: Any, min_confidence: float, min_margin: float) -> None:
        import numpy as np

        from edgefg.runtime.outputs.drift_profile import BINS

        self.names: list[str] = ["class", "confidence", "margin"]
        self.use_unknown = min_confidence > 0 or min_margin > 0
        if self.use_unknown:
            self.names.append("unknown")
        self.names += ["luminance", "sharpness"]
        sizes = {"class": len(profile.labels), "unknown": 2, **{k: v[2] for k, v in BINS.items()}}
        self.offset: dict[str, int] = {}
        at = 0
        for name in self.names:
            self.offset[name] = at
            at += sizes[name]
        self.size = sizes
        self.total = at
        self.m = profile.images
        ref: dict[str, Any] = {"class": profile.classes, **profile.hist}
        if self.use_unknown:
            r = profile.unknown_rate(min_confidence, min_margin)
            ref["unknown"] = np.asarray([profile.images * (1 - r), profile.images * r])
        self.reference_unknown_rate = profile.unknown_rate(min_confidence, min_margin) if self.use_unknown else None
        # bins compared: deciles of the reference for the continuous signals, one per class, two for unknown
        groups = min(MAX_GROUPS, max(2, profile.images // 10))
        self.starts: dict[str, Any] = {}
        self.ref: dict[str, Any] = {}
        for name in self.names:
            r = np.asarray(ref[name], np.float64)
            starts = equal_mass_starts(r, groups) if name in BINS else np.arange(len(r))
            self.starts[name] = starts
            self.ref[name] = np.add.reduceat(r, starts)

    def levels(self, name: str, n: int, threshold: float, clear: float) -> tuple[float, float]:
        floor, mean = noise_levels(len(self.starts[name]), n, self.m)
        alert = max(threshold, floor)
        return alert, min(max(clear, mean), alert / 2)


class _Camera:
    def __init__(self, window: int, sig: _Signals) -> None:
        import numpy as np

        self.ring = np.zeros((window, len(sig.names)), np.intp)
        self.counts = np.zeros(sig.total, np.int64)
        self.n = 0
        self.pos = 0
        self.frames = 0
        self.since = 0
        self.alerting: dict[str, bool] = {s: False for s in sig.names}
        self.alerts = 0
        self.scores: dict[str, float] = {}
        self.levels: dict[str, tuple[float, float]] = {}
        self.scored_at = 0  # frames when last scored
        self.published = 0.0  # monotonic time of the last MQTT publish


class _Shadow:
    """The reference bundle on its own thread, fed one frame in N through a bounded queue."""

    def __init__(self, ctx: Any, opts: DriftOptions, events: Any) -> None:
        from edgefg.errors import ClassMismatchError, InputPathError
        from edgefg.runtime.engine.bundle import LoadedBundle

        path = Path(opts.shadow)  # type: ignore[arg-type]
        if not path.exists():
            raise InputPathError(f"--shadow bundle '{path}' does not exist", "pass a bundle directory written by edgefg deploy (e.g. the FP32 one)")
        self.model = LoadedBundle(path, trust=ctx.opts.trust or None, num_threads=opts.shadow_threads)
        main = list(ctx.model.labels)
        if list(self.model.labels) != main:
            theirs = list(self.model.labels)
            self.model.close()
            detail = (f"{len(theirs)} classes vs {len(main)}" if len(theirs) != len(main) else
                      "same classes in another order" if sorted(theirs) == sorted(main) else
                      f"e.g. '{next(a for a, b in zip(theirs, main) if a != b)}' where the bundle has '{next(b for a, b in zip(theirs, main) if a != b)}'")
            raise ClassMismatchError(f"--shadow bundle '{path}' has other labels than the bundle ({detail}): top-1 agreement would mean nothing",
                                     "use a shadow bundle made from the same model (e.g. the FP32 deploy of the same artifact)")
        self.path = path
        self.ctx = ctx
        self.every = opts.shadow_every
        self.events = events
        self.q: queue.Queue = queue.Queue(maxsize=opts.shadow_queue)
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.agree: dict[str, int] = {}
        self.compared: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.errors = 0
        self.infer_ms = 0.0
        self._thread = threading.Thread(target=self._loop, name="edgefg-shadow", daemon=True)
        self._thread.start()

    def offer(self, camera: str, crop: Any, main_top1: int) -> None:
        n = self.seen.get(camera, 0)
        self.seen[camera] = n + 1
        if n % self.every:
            return
        try:
            self.q.put_nowait((camera, crop.copy(), main_top1))  # the capture may reuse its buffer
        except queue.Full:
            with self.lock:
                self.dropped[camera] = self.dropped.get(camera, 0) + 1

    def _loop(self) -> None:
        import numpy as np

        while True:
            item = self.q.get()
            if item is None:
                return
            camera, crop, main_top1 = item
            try:
                t0 = time.perf_counter()
                scores = self.model.scores(self.model.prepare(crop)[None])
                dt = (time.perf_counter() - t0) * 1e3
                top = int(np.argmax(scores[0]))  # argmax of the scores = argmax of their softmax
            except Exception as exc:  # one bad frame must not end the shadow
                with self.lock:
                    self.errors += 1
                    first = self.errors == 1
                if first:
                    self.events.emit("shadow_error", bundle=str(self.path), error=f"{type(exc).__name__}: {exc}")
                continue
            with self.lock:
                self.compared[camera] = self.compared.get(camera, 0) + 1
                self.agree[camera] = self.agree.get(camera, 0) + (top == main_top1)
                self.infer_ms += dt

    def camera_stats(self, camera: str) -> dict[str, Any]:
        with self.lock:
            n, k, d = self.compared.get(camera, 0), self.agree.get(camera, 0), self.dropped.get(camera, 0)
        lo, hi = wilson(k, n)
        return {"shadow_agreement": round(k / n, 4) if n else None, "shadow_ci_low": round(lo, 4), "shadow_ci_high": round(hi, 4),
                "shadow_compared": n, "shadow_dropped": d}

    def overall(self) -> dict[str, Any]:
        with self.lock:
            n, k, d = sum(self.compared.values()), sum(self.agree.values()), sum(self.dropped.values())
            ms = self.infer_ms / n if n else None
        lo, hi = wilson(k, n)
        return {"shadow_agreement": round(k / n, 4) if n else None, "shadow_ci_low": round(lo, 4), "shadow_ci_high": round(hi, 4),
                "shadow_compared": n, "shadow_agreed": k, "shadow_dropped": d, "shadow_errors": self.errors,
                "shadow_infer_ms": round(ms, 3) if ms is not None else None}

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued frames (at most ``timeout_s``), then stop."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.q.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            self.model.close()


class DriftOutput:
    """The ``drift`` field output (see the module docstring)."""

    name = "drift"

    def __init__(self, ctx: Any, opts: DriftOptions) -> None:
        from edgefg.errors import EdgefgError
        from edgefg.runtime.outputs.drift_profile import bin_of, input_signals, output_signals

        self._bin_of, self._input_signals, self._output_signals = bin_of, input_signals, output_signals
        self.ctx, self.opts, self.events = ctx, opts, ctx.events
        self.cameras: dict[str, _Camera] = {}
        self.profile: Profile | None = None
        self.sig: _Signals | None = None
        self.reference: dict[str, Any] | None = None
        self._cost_s = 0.0
        self._cost_frames = 0
        self._snap: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.mqtt = ctx.mqtt
        self.shadow: _Shadow | None = None
        # start-up events wait for the first frame: a run that fails to start (a port in use, no camera) says only that
        self._pending: list[tuple[str, dict[str, Any]]] = []
        if opts.drift is not False:
            self._open_profile()
        if opts.shadow is not None:
            self.shadow = _Shadow(ctx, opts, self.events)
            self._pending.append(("shadow_started", {"bundle": str(self.shadow.path), "precision": self.shadow.model.manifest.precision,
                                                     "backend": self.shadow.model.manifest.backend, "every": opts.shadow_every}))
        if self.sig is not None:
            for cam in ctx.cameras:
                self.cameras[cam] = _Camera(opts.window, self.sig)
                self._snap[cam] = {"state": f"warming up 0/{opts.warmup}", "alert": False, "window": 0}
            if self.mqtt is not None:
                try:
                    self._mqtt_discovery()
                    for cam in ctx.cameras:
                        self._publish(cam, force=True)
                except Exception as exc:  # never stop the run for its MQTT extras
                    self.events.emit("sink_error", sink="drift", error=f"MQTT: {type(exc).__name__}: {exc}")
        if self.sig is None and self.shadow is None and opts.drift is True:
            raise EdgefgError("drift monitoring was asked for (--drift) but there is no reference profile", f"make one: {HOW_TO}")

    # -- set-up -------------------------------------------------------------------------------------
    def _open_profile(self) -> None:
        from edgefg.errors import EdgefgError
        from edgefg.runtime.outputs.drift_profile import bundle_profile, load_profile

        model = self.ctx.model
        opts = self.opts
        profile: Profile | None
        if opts.reference is not None:
            profile = load_profile(opts.reference, model.labels)
            where = str(opts.reference)
        else:
            profile = bundle_profile(model)
            where = "bundle"
            if profile is None:
                if opts.drift is True:
                    raise EdgefgError(f"--drift: the bundle '{model.directory}' has no drift reference profile", f"make one: {HOW_TO}")
                self._pending.append(("drift_off", {"reason": f"the bundle '{model.directory}' has no drift reference profile (drift_reference.json)",
                                                    "hint": f"to monitor drift: {HOW_TO}"}))
                return
        run = self.ctx.opts
        self.profile = profile
        self.sig = sig = _Signals(profile, float(getattr(run, "min_confidence", 0.0) or 0.0), float(getattr(run, "min_margin", 0.0) or 0.0))
        self.reference = {"from": where, "source": profile.source, "images": profile.images}
        levels = {s: round(sig.levels(s, opts.window, opts.threshold, opts.clear)[0], 4) for s in sig.names}
        fields: dict[str, Any] = {"reference": where, "source": profile.source, "images": profile.images, "window": opts.window,
                                  "every": opts.every, "warmup": opts.warmup, "signals": sig.names, "alert_levels": levels}
        raised = sorted(s for s, v in levels.items() if v > opts.threshold + 1e-9)
        if raised:
            fields["note"] = (f"with {profile.images} reference images and a {opts.window}-frame window, sampling noise alone reaches PSI "
                              + ", ".join(f"{s} {levels[s]:.3g}" for s in raised)
                              + ": those signals alert only above it; a larger reference lowers it: " + HOW_TO)
        if sig.reference_unknown_rate is not None:
            fields["reference_unknown_rate"] = round(sig.reference_unknown_rate, 4)
        self._pending.append(("drift_monitoring", fields))

    # -- per frame ------------------------------------------------------------------------------------
    def on_result(self, camera: str, result: dict[str, Any], frame: Any) -> None:
        t0 = time.perf_counter()
        if self._pending:
            pending, self._pending = self._pending, []
            for event, fields in pending:
                self.events.emit(event, **fields)
        probs = frame.probabilities
        if probs is None or frame.image is None:
            return
        try:
            crop = self.ctx.crop(camera, frame.image)
        except Exception:
            crop = frame.image
        bin_of, input_signals = self._bin_of, self._input_signals
        top, conf, margin = self._output_signals(probs)
        if self.shadow is not None:
            self.shadow.offer(camera, crop, top)
        sig = self.sig
        if sig is not None:
            cam = self.cameras.get(camera)
            if cam is None:
                cam = self.cameras[camera] = _Camera(self.opts.window, sig)
            lum, sharp = input_signals(crop)
            off = sig.offset
            row = [top, off["confidence"] + bin_of("confidence", conf), off["margin"] + bin_of("margin", margin)]
            if sig.use_unknown:
                run = self.ctx.options(camera)  # the camera's own open-set thresholds
                row.append(off["unknown"] + int(conf < run.min_confidence or margin < run.min_margin))
            row += [off["luminance"] + bin_of("luminance", lum), off["sharpness"] + bin_of("sharpness", sharp)]
            if cam.n == len(cam.ring):
                cam.counts[cam.ring[cam.pos]] -= 1
            else:
                cam.n += 1
            cam.ring[cam.pos] = row
            cam.counts[row] += 1
            cam.pos = (cam.pos + 1) % len(cam.ring)
            cam.frames += 1
            cam.since += 1
            if cam.n >= (self.opts.warmup or 1) and cam.since >= self.opts.every:
                self._score(camera, cam)
            elif cam.n < (self.opts.warmup or 1):
                self._snap[camera] = {"state": f"warming up {cam.n}/{self.opts.warmup}", "alert": False, "window": cam.n}
        self._cost_s += time.perf_counter() - t0
        self._cost_frames += 1

    def _score(self, camera: str, cam: _Camera) -> None:
        import numpy as np

        sig = self.sig
        assert sig is not None
        opts = self.opts
        cam.since = 0
        cam.scored_at = cam.frames
        scores: dict[str, float] = {}
        levels: dict[str, tuple[float, float]] = {}
        changed = False
        for name in sig.names:
            o = sig.offset[name]
            w = np.add.reduceat(cam.counts[o : o + sig.size[name]], sig.starts[name])
            s = psi(w, sig.ref[name])
            alert_at, clear_at = sig.levels(name, cam.n, opts.threshold, opts.clear)
            scores[name], levels[name] = s, (alert_at, clear_at)
            if not cam.alerting[name] and s >= alert_at:
                cam.alerting[name] = True
                cam.alerts += 1
                changed = True
                self.events.emit("drift", camera=camera, signal=name, score=round(s, 4), threshold=round(alert_at, 4), window=cam.n,
                                 frames=cam.frames, reference_images=sig.m, **self._why(name, cam))
            elif cam.alerting[name] and s < clear_at:
                cam.alerting[name] = False
                changed = True
                self.events.emit("drift_cleared", camera=camera, signal=name, score=round(s, 4), threshold=round(clear_at, 4), window=cam.n,
                                 frames=cam.frames)
        cam.scores, cam.levels = scores, levels
        alerting = [s for s in sig.names if cam.alerting[s]]
        snap: dict[str, Any] = {"state": ("ALERT: " + ", ".join(alerting)) if alerting else "ok", "alert": bool(alerting), "window": cam.n,
                                "max_relative": round(max(scores[s] / levels[s][0] for s in scores), 3)}
        snap.update({f"psi_{s}": round(v, 4) for s, v in scores.items()})
        self._snap[camera] = snap
        if self.mqtt is not None:
            self._publish(camera, force=changed)

    def _why(self, name: str, cam: _Camera) -> dict[str, Any]:
        """A hint at what moved: the window's vs the reference's mean (continuous) or top class."""
        import numpy as np

        from edgefg.runtime.outputs.drift_profile import BINS, bin_centres

        sig = self.sig
        assert sig is not None
        o = sig.offset[name]
        w = cam.counts[o : o + sig.size[name]].astype(np.float64)
        if name in BINS and w.sum() > 0:
            c = bin_centres(name)
            assert self.profile is not None  # set with sig
            ref = self.profile.hist[name]
            return {"window_mean": round(float((w * c).sum() / w.sum()), 4), "reference_mean": round(float((ref * c).sum() / max(ref.sum(), 1)), 4)}
        if name == "unknown" and w.sum() > 0:
            return {"window_rate": round(float(w[1] / w.sum()), 4), "reference_rate": round(float(sig.reference_unknown_rate or 0.0), 4)}
        if name == "class" and w.sum() > 0:
            assert self.profile is not None
            labels = self.profile.labels
            top = np.argsort(-w)[:3]
            return {"window_top_classes": {labels[int(i)]: round(float(w[i] / w.sum()), 3) for i in top if w[i] > 0}}
        return {}

    def camera_ended(self, camera: str) -> None:
        cam = self.cameras.get(camera)
        if cam is not None and cam.since and cam.n >= (self.opts.warmup or 1):
            self._score(camera, cam)

    # -- MQTT -------------------------------------------------------------------------------------------
    def _mqtt_payload(self, camera: str) -> dict[str, Any]:
        cam = self.cameras[camera]
        payload: dict[str, Any] = {
            "alert": any(cam.alerting.values()), "alerting": [s for s, a in cam.alerting.items() if a],
            "scores": {s: round(v, 4) for s, v in cam.scores.items()}, "thresholds": {s: round(v[0], 4) for s, v in cam.levels.items()},
            "max_relative": self._snap.get(camera, {}).get("max_relative"),
            "window": cam.n, "frames": cam.frames, "warming_up": cam.n < (self.opts.warmup or 1), "reference_images": self.sig.m if self.sig else None,
            "ts": round(time.time(), 3),
        }
        if self.shadow is not None:
            s = self.shadow.camera_stats(camera)
            payload["shadow"] = {"agreement": s["shadow_agreement"], "ci95": [s["shadow_ci_low"], s["shadow_ci_high"]], "compared": s["shadow_compared"]}
        return payload

    def _publish(self, camera: str, force: bool = False) -> None:
        mqtt = self.mqtt
        cam = self.cameras.get(camera)
        if mqtt is None or cam is None or not hasattr(mqtt, "publish_retained"):
            return
        now = time.monotonic()
        if not force and now - cam.published < self.opts.mqtt_every_s:
            return
        cam.published = now
        try:
            mqtt.publish_retained(camera, "drift", self._mqtt_payload(camera))
        except Exception as exc:
            self.events.emit("sink_error", sink="drift", error=f"MQTT: {type(exc).__name__}: {exc}")

    def _mqtt_discovery(self) -> None:
        mqtt = self.mqtt
        if mqtt is None or not hasattr(mqtt, "add_discovery"):
            return
        for cam in self.ctx.cameras:
            topic = mqtt.topic(cam, "drift")
            mqtt.add_discovery("binary_sensor", cam, "drift", {
                "name": "Drift", "state_topic": topic, "value_template": "{{ 'ON' if value_json.alert else 'OFF' }}",
                "payload_on": "ON", "payload_off": "OFF", "device_class": "problem", "json_attributes_topic": topic, "icon": "mdi:chart-bell-curve"})
            mqtt.add_discovery("sensor", cam, "drift_score", {
                "name": "Drift score", "state_topic": topic, "value_template": "{{ value_json.max_relative if value_json.max_relative is not none else 0 }}",
                "json_attributes_topic": topic, "state_class": "measurement", "icon": "mdi:chart-bell-curve",
                "unit_of_measurement": "× alert level"})

    # -- reporting ----------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        cams: dict[str, dict[str, Any]] = {c: {} for c in self.ctx.cameras}
        if self.sig is not None:
            snaps = dict(self._snap)
            summary.update({"drift_reference_images": self.sig.m, "drift_cameras_alerting": sum(1 for s in snaps.values() if s.get("alert")),
                            "drift_ms_per_frame": round(self._cost_s * 1e3 / self._cost_frames, 4) if self._cost_frames else None})
            for c, s in snaps.items():
                cams.setdefault(c, {}).update({("drift" if k == "state" else f"drift_{k}" if not k.startswith("psi_") else k): v for k, v in s.items()})
        elif self.opts.drift is not False:
            summary["drift"] = "off (no reference profile)"
        if self.shadow is not None:
            summary.update(self.shadow.overall())
            for c in list(cams):
                cams[c].update(self.shadow.camera_stats(c))
        return {"summary": summary, "cameras": cams}

    def metrics(self) -> list[tuple[str, str, str, list[tuple[dict[str, Any], float]]]]:
        out: list[tuple[str, str, str, list[tuple[dict[str, Any], float]]]] = []
        if self.sig is not None:
            cams = list(self.cameras.items())
            out.append(("drift_score", "gauge", "Drift score (PSI of the rolling window vs the reference profile) per signal.",
                        [({"camera": c, "signal": s}, v) for c, cam in cams for s, v in cam.scores.items()]))
            out.append(("drift_threshold", "gauge", "PSI at which the signal alerts (the threshold, or its sampling noise when higher).",
                        [({"camera": c, "signal": s}, v[0]) for c, cam in cams for s, v in cam.levels.items()]))
            out.append(("drift_alert", "gauge", "1 while any drift signal of the camera is alerting.",
                        [({"camera": c}, float(any(cam.alerting.values()))) for c, cam in cams]))
            out.append(("drift_alerts_total", "counter", "Drift alerts raised (crossings).", [({"camera": c}, cam.alerts) for c, cam in cams]))
            out.append(("drift_window_frames", "gauge", "Frames in the camera's drift window.", [({"camera": c}, cam.n) for c, cam in cams]))
        if self.shadow is not None:
            rows = [(c, self.shadow.camera_stats(c)) for c in self.ctx.cameras]
            out.append(("shadow_agreement", "gauge", "Top-1 agreement of the bundle with the --shadow bundle on compared frames.",
                        [({"camera": c}, s["shadow_agreement"]) for c, s in rows if s["shadow_agreement"] is not None]))
            out.append(("shadow_agreement_ci_low", "gauge", "Wilson 95 % interval of the shadow agreement, lower end.",
                        [({"camera": c}, s["shadow_ci_low"]) for c, s in rows if s["shadow_compared"]]))
            out.append(("shadow_agreement_ci_high", "gauge", "Wilson 95 % interval of the shadow agreement, upper end.",
                        [({"camera": c}, s["shadow_ci_high"]) for c, s in rows if s["shadow_compared"]]))
            out.append(("shadow_frames_total", "counter", "Frames the shadow bundle compared.", [({"camera": c}, s["shadow_compared"]) for c, s in rows]))
            out.append(("shadow_dropped_total", "counter", "Frames due for the shadow that found it busy (dropped).",
                        [({"camera": c}, s["shadow_dropped"]) for c, s in rows]))
        return out

    def routes(self) -> dict[str, Any]:
        return {}

    def close(self) -> dict[str, Any]:
        if self.shadow is not None:
            self.shadow.close()
        out: dict[str, Any] = {}
        if self.sig is not None:
            for c, cam in self.cameras.items():
                if cam.since and cam.n >= (self.opts.warmup or 1):
                    self._score(c, cam)
                self._publish(c, force=True)
            out["reference"] = self.reference
            out["cameras"] = {c: {"frames": cam.frames, "window": cam.n, "alerts": cam.alerts, "alerting": [s for s, a in cam.alerting.items() if a],
                                  "scores": {s: round(v, 4) for s, v in cam.scores.items()},
                                  "thresholds": {s: round(v[0], 4) for s, v in cam.levels.items()}}
                              for c, cam in self.cameras.items()}
            out["ms_per_frame"] = round(self._cost_s * 1e3 / self._cost_frames, 4) if self._cost_frames else None
        elif self.opts.drift is not False:
            out["drift"] = "off: no reference profile"
        if self.shadow is not None:
            out["shadow"] = {"bundle": str(self.shadow.path), **self.shadow.overall(),
                             "cameras": {c: self.shadow.camera_stats(c) for c in self.ctx.cameras}}
        return out
