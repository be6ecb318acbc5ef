"""Preprocessing parity: edgefg's input tensors against timm's own eval transform.

timm's ``resolve_data_config`` + ``create_transform`` (PIL decode and resize) is how a timm model
was evaluated; edgefg's one preprocessing function must produce the same tensors, or every accuracy
figure after it is measured on different inputs. The check runs both on a sample of the user's
images and reports the largest element difference, the mean difference and — given a model — the
top-1 agreement of the model on the two inputs. It fails when a preprocessing option differs from
the model's own config, or when the ``pil`` resizer (which claims to be exact) differs by more than
``tolerance``; the ``opencv`` resizer is a declared approximation whose difference is reported.
Needs torch, torchvision and timm (the ``compress`` extra).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import EdgefgError, MissingDependencyError
from edgefg.manifest import Preprocess
from edgefg.runtime.engine.preprocess import convert_batch, preprocess, read_image, resized_whole

DEFAULT_TOLERANCE = 1.0  # 8-bit grey levels: one level of decoder rounding; a resize difference is many
DEFAULT_IMAGES = 32
RAW_PIXELS_STD = 1.0 / 255.0


class PreprocessMismatch(EdgefgError):
    """edgefg's preprocessing does not reproduce the model's own (exit 2: fix the option)."""


@dataclass
class PreprocessCheck:
    images: int
    max_abs: float  # largest |edgefg - timm| over all elements, in 8-bit grey levels (Δ × std × 255)
    mean_abs: float
    top1_agreement: float | None  # the model's top-1 on edgefg inputs vs on timm inputs
    differing: list[str] = field(default_factory=list)  # "crop_mode: edgefg 'center', model 'squash'"
    resize: str = "pil"
    tolerance: float = DEFAULT_TOLERANCE
    worst_image: str | None = None
    reference: str = "timm.data.create_transform"

    @property
    def exact(self) -> bool:
        return self.resize == "pil"

    @property
    def passed(self) -> bool:
        return not self.differing and (not self.exact or self.max_abs <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exact": self.exact, "passed": self.passed}

    def summary(self) -> str:
        agree = "" if self.top1_agreement is None else f", top-1 agreement {100 * self.top1_agreement:.2f} %"
        what = "exact resizer" if self.exact else "opencv resizer: an approximation, difference reported, not gated"
        verdict = "ok" if self.passed else "MISMATCH"
        line = f"preprocessing vs timm on {self.images} images: max |Δ| {self.max_abs:.3g}, mean |Δ| {self.mean_abs:.3g} grey levels{agree} ({what}) — {verdict}"
        if self.differing:
            line += "; differs from the model's config: " + "; ".join(self.differing)
        return line

    def raise_if_failed(self) -> None:
        if self.passed:
            return
        if self.differing:
            flags = ", ".join("--" + d.split(":")[0].replace("_", "-") for d in self.differing)
            raise PreprocessMismatch(
                f"edgefg's preprocessing differs from the model's own: {'; '.join(self.differing)}",
                f"drop the override ({flags}), or, if the model's config.json is what is wrong, fix it (or pass --no-check-preprocess)",
            )
        raise PreprocessMismatch(
            f"edgefg's input tensors differ from timm's by up to {self.max_abs:.3g} grey levels (tolerance {self.tolerance:g}; worst: {self.worst_image})",
            "pass --resize opencv to accept the approximation, or report this image to edgefg",
        )


def _require_timm():
    try:
        import timm.data  # noqa: F401
        import torch  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError.for_module(getattr(exc, "name", None) or "timm", "compress") from None


def _is_raw_pixels(spec: Preprocess) -> bool:
    return all(m == 0 for m in spec.mean) and all(abs(s - RAW_PIXELS_STD) < 1e-12 for s in spec.std)


def config_differences(spec: Preprocess, model_config: dict[str, Any]) -> list[str]:
    """Options of ``spec`` that differ from the model's timm data config (``resolve_data_config``)."""
    want = {
        "input_size": tuple(int(v) for v in model_config.get("input_size", (3, *spec.input_size))[-2:]),
        "crop_mode": model_config.get("crop_mode") or "center",
        "crop_pct": float(model_config.get("crop_pct") or 0.875),
        "interpolation": model_config.get("interpolation") or "bilinear",
    }
    if not _is_raw_pixels(spec):  # OpenVINO --embed-preprocess moves normalisation into the IR
        want["mean"] = tuple(float(v) for v in model_config.get("mean", spec.mean))
        want["std"] = tuple(float(v) for v in model_config.get("std", spec.std))
    out = []
    for key, value in want.items():
        have = getattr(spec, key)
        same = np.allclose(have, value, rtol=0, atol=1e-6) if key in ("mean", "std", "crop_pct") else tuple(np.atleast_1d(have)) == tuple(np.atleast_1d(value))
        if not same:
            out.append(f"{key}: edgefg {have!r}, model {value!r}")
    return out


def reference_batch(paths: Sequence[Path], spec: Preprocess, model_config: dict[str, Any] | None = None) -> np.ndarray:
    """timm's eval transform on PIL-decoded images, as float NCHW in ``spec``'s normalisation and
    channel order (so it compares element-wise with edgefg's samples)."""
    _require_timm()
    from PIL import Image
    from timm.data import create_transform

    from edgefg.models.loader import timm_data_config

    cfg = dict(model_config or timm_data_config(spec))
    # normalisation as the bundle applies it; the input size is compared by config_differences, not here
    cfg.update(mean=tuple(spec.mean), std=tuple(spec.std), input_size=(3, *spec.input_size))
    cfg = {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in cfg}
    transform = create_transform(**cfg, is_training=False)
    out = []
    for p in paths:
        with Image.open(p) as im:
            x = transform(im.convert("RGB")).numpy()
        out.append(x[::-1] if spec.color.upper() == "BGR" else x)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def check_model(model, samples: Sequence[Any], size: int = DEFAULT_IMAGES) -> PreprocessCheck | None:
    """Check a loaded PyTorch model's preprocessing on ``size`` of ``samples`` against its own timm
    data config (None when the model has no timm config or no torch module)."""
    cfg = model.source.get("data_config")
    if model.module is None or not cfg or not samples:
        return None
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    paths = [s.path for s in samples[:size]]
    return check_preprocess(model.preprocess, paths, model_config=cfg, predict=predict)


def float_view(spec: Preprocess) -> Preprocess:
    """``spec`` with a float32 NCHW input (same geometry and normalisation)."""
    return dataclasses.replace(spec, layout="NCHW", dtype="float32", quant_scale=None, quant_zero_point=None)


def check_preprocess(
    spec: Preprocess,
    paths: Sequence[Path],
    model_config: dict[str, Any] | None = None,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    batch: int = 16,
) -> PreprocessCheck:
    """Compare edgefg's preprocessing of ``paths`` with timm's. ``model_config`` is the model's own
    timm data config (default: the one ``spec`` stands for, which checks the implementation only);
    ``predict`` maps a batch in ``spec``'s input format to scores (for the top-1 agreement)."""
    _require_timm()
    paths = [Path(p) for p in paths]
    if not paths:
        raise EdgefgError("the preprocessing check needs images", "pass --data DIR")
    fspec = float_view(spec)
    levels = (np.asarray(spec.std, np.float32) * 255.0).reshape(1, 3, 1, 1)  # normalised units → grey levels
    max_abs, total, count, worst = 0.0, 0.0, 0, None
    agree, seen = 0, 0
    strips: list[Path] = []
    for i in range(0, len(paths), batch):
        decoded = [(p, read_image(p)) for p in paths[i : i + batch]]
        # timm resizes a thin strip whole (2×16000 px: 224×1 792 000, GBs): not compared
        strips += [p for p, im in decoded if not resized_whole(im.shape[:2], fspec)]
        decoded = [(p, im) for p, im in decoded if resized_whole(im.shape[:2], fspec)]
        if not decoded:
            continue
        chunk = [p for p, _ in decoded]
        ours = np.stack([preprocess(im, fspec) for _, im in decoded])
        theirs = reference_batch(chunk, spec, model_config)
        diff = np.abs(ours - theirs) * levels
        per_image = diff.reshape(len(chunk), -1).max(axis=1)
        j = int(per_image.argmax())
        if per_image[j] > max_abs:
            max_abs, worst = float(per_image[j]), str(chunk[j])
        total += float(diff.sum())
        count += diff.size
        if predict is not None:
            a = predict(convert_batch(ours, fspec, spec)).argmax(axis=1)
            b = predict(convert_batch(theirs, fspec, spec)).argmax(axis=1)
            agree += int((a == b).sum())
            seen += len(chunk)
    if strips:
        logging.getLogger(__name__).warning(
            "%d thin-strip image(s) (e.g. '%s') not compared with timm: its transform would resize them whole", len(strips), strips[0])
        if len(strips) == len(paths):
            raise EdgefgError("the preprocessing check has no image it can compare (all are thin strips)", "pass --data with ordinary photos")
    return PreprocessCheck(
        images=len(paths) - len(strips),
        max_abs=max_abs,
        mean_abs=total / max(count, 1),
        top1_agreement=agree / seen if seen else None,
        differing=config_differences(spec, model_config) if model_config else [],
        resize=spec.resize,
        tolerance=tolerance,
        worst_image=worst,
    )
