"""A bare checkpoint (weights only): what its weights do not say — architecture, classes, model args such as
timm's ``pad_type``, and preprocessing — comes from the user (:class:`CheckpointSettings`: a timm/HF hub
config.json and/or explicit values, or an explicit opt-in to timm's defaults), or it is refused with one
line naming what is unknown and how to give it. Never filled in silently: timm's defaults for an
architecture are not a fine-tuned model's. Where each setting came from is recorded in the model's source
(and so in the artifact's manifest and report).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefg.errors import ModelLoadError, UnsupportedError

CHECKPOINT_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}
# the preprocessing a bare checkpoint must be given (a timm pretrained_cfg key each), and the flag that gives it
BARE_PREPROCESS_KEYS = ("mean", "std", "crop_pct", "interpolation", "input_size")
PAD_TYPES = {"same": "same", "valid": "valid", "symmetric": ""}  # flag value -> timm's pad_type ('' = PyTorch-style symmetric)
SETTING_FLAGS = {
    "mean": "--mean R G B", "std": "--std R G B", "crop_pct": "--crop-pct F", "interpolation": "--interpolation NAME",
    "input_size": "--model-input-size H W", "pad_type": "--pad-type " + "|".join(PAD_TYPES),
}
TIMM_DEFAULT = "timm default"  # the origin recorded for a setting taken from timm's defaults (--timm-defaults)


def flag_of(key: str) -> str:
    """The command-line flag of setting ``key`` (a :class:`CheckpointSettings` field)."""
    return "--" + {"input_size": "model-input-size"}.get(key, key).replace("_", "-")


@dataclass(frozen=True)
class CheckpointSettings:
    """What a bare checkpoint does not say about its model, as the user gives it: ``config`` (a timm/HF hub
    config.json: architecture, num_classes, label_names, pretrained_cfg, model_args) and/or explicit values,
    which win over the config's. ``timm_defaults``: take timm's defaults for the architecture for whatever
    is still unknown (an explicit opt-in; without it an unknown setting is refused)."""

    config: Path | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    input_size: tuple[int, int] | None = None  # (H, W)
    crop_mode: str | None = None
    pad_type: str | None = None  # a key of PAD_TYPES
    timm_defaults: bool = False

    def given(self) -> list[str]:
        """The settings given (field names), for the refusal of settings on a model that is not a bare checkpoint."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) not in (None, False)]

    def explicit_cfg(self) -> dict[str, Any]:
        """The explicit values as timm ``pretrained_cfg`` keys."""
        cfg: dict[str, Any] = {k: getattr(self, k) for k in ("mean", "std", "crop_pct", "interpolation", "crop_mode") if getattr(self, k) is not None}
        if self.input_size is not None:
            cfg["input_size"] = [3, *self.input_size]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}

    @classmethod
    def from_source(cls, source: dict[str, Any]) -> CheckpointSettings:
        """The settings that rebuild a checkpoint exactly as an artifact's ``source`` records it (its resolved
        data config; its model_args are passed as they are, so whatever they lack was timm's builder default then too)."""
        cfg = source.get("data_config") or {}
        size = cfg.get("input_size")
        return cls(mean=tuple(cfg["mean"]) if cfg.get("mean") else None, std=tuple(cfg["std"]) if cfg.get("std") else None,  # type: ignore[arg-type]
                   crop_pct=cfg.get("crop_pct"), interpolation=cfg.get("interpolation"), crop_mode=cfg.get("crop_mode"),
                   input_size=(int(size[-2]), int(size[-1])) if size else None, timm_defaults=True)


def is_bare_checkpoint(path: str | Path) -> bool:
    """A weights file (no config beside it that edgefg reads): .safetensors/.pth/.pt/.bin/.ckpt."""
    return Path(path).suffix.lower() in CHECKPOINT_SUFFIXES and not Path(path).is_dir()


def _takes_pad_type(timm: Any, arch: str) -> bool:
    """Whether timm's builder for ``arch`` takes ``pad_type`` (EfficientNet/MobileNet families): built once on
    the meta device (no memory, no weights)."""
    import torch

    try:
        with torch.device("meta"):
            timm.create_model(arch, pretrained=False, num_classes=2, pad_type="same")
    except TypeError as exc:
        if "pad_type" in str(exc):
            return False
        raise ModelLoadError(f"cannot build {arch}: {str(exc).splitlines()[0][:200]}") from None
    except Exception:  # noqa: BLE001 - a builder that cannot run on the meta device: the real build below says what is wrong
        return False
    return True


def _timm_defaults_line(timm: Any, arch: str, pad: bool) -> str:
    """timm's defaults for ``arch``, as --timm-defaults would take them (for the refusal's hint)."""
    pcfg = timm.models.get_pretrained_cfg(arch)
    d = timm.data.resolve_data_config({}, pretrained_cfg=pcfg.to_dict() if pcfg is not None else {"input_size": (3, 224, 224)})
    parts = [f"mean {','.join(f'{v:.3g}' for v in d['mean'])}", f"std {','.join(f'{v:.3g}' for v in d['std'])}", f"crop_pct {d['crop_pct']:g}",
             f"interpolation {d['interpolation']}", f"input_size {d['input_size'][-2]}×{d['input_size'][-1]}"]
    return ", ".join(parts + (["pad_type as timm's builder sets it"] if pad else []))


def _refuse_unknown(path: Path, arch: str, missing: list[str], config: Path | None, timm: Any, pad: bool) -> UnsupportedError:
    where = f"neither --config '{config.name}' nor a flag gives" if config else "nothing gives"
    flags = " ".join(SETTING_FLAGS[k] for k in missing)
    return UnsupportedError(
        f"'{path.name}' is a bare checkpoint and {where} its {', '.join(missing[:-1]) + ' and ' if len(missing) > 1 else ''}{missing[-1]}; "
        "edgefg does not guess them "
        "(timm's defaults can cost a fine-tuned model many points)",
        ("pass " if config else "pass --config config.json (the model's timm/HF hub config), or ") + flags
        + f", or --timm-defaults to accept timm's defaults for {arch}: {_timm_defaults_line(timm, arch, pad)}")
