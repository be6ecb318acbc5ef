"""The search space: which knobs a sweep varies, as dataclasses; built-in spaces per model family.

A knob is a list of values; the space is their cartesian product minus combinations that make no
sense (token reduction on a CNN is kept: it fails as a recorded trial, which is the point). A
space file is TOML with a ``[space]`` table whose keys are the fields of :class:`SearchSpace`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgefg.errors import DataError, InputPathError

PRECISIONS = ("fp32", "fp16", "int8", "int8-accuracy")
FLOAT = ("fp32", "fp16")


@dataclass(frozen=True)
class TrialConfig:
    """One point of the space. ``resolution`` None = the model's own input size."""

    precision: str = "fp32"  # fp32 | fp16 (deploy-time float) | int8 | int8-accuracy (NNCF accuracy control)
    prune: float = 0.0  # structured pruning ratio, followed by distillation
    kd_epochs: int = 1  # distillation epochs after pruning
    resolution: int | None = None  # square input size (CNNs with global pooling)
    resolution_kd: bool = False  # True: compress --input-size (distilled from the full-resolution model, kd_epochs); False: plain down-scale
    token_keep: float | None = None  # ViT token keep rate
    token_method: str = "evit"  # evit | tome
    adapters: str | None = None  # "ila"
    calib_size: int = 300
    engine: str | None = None  # another engine of the target's device (its profile's [engines]); None: the profile's backend

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def compress_dict(self) -> dict[str, Any]:
        """The part that decides the compressed artifact: fp32 and fp16 share one float artifact."""
        d = self.to_dict()
        d["precision"] = "float" if self.precision in FLOAT else self.precision
        if not self.prune and not (self.resolution and self.resolution_kd):
            d["kd_epochs"] = 0
        if self.token_keep is None:
            d["token_method"] = None
        if d["precision"] == "float":
            d["calib_size"] = 0
        d["engine"] = None  # deploy-time: every engine deploys the same artifact
        return d

    @property
    def compress_key(self) -> str:
        return _digest(_stable(self.compress_dict()))

    @property
    def trial_id(self) -> str:
        return f"t{_digest(_stable(self.to_dict()))}"

    def label(self) -> str:
        parts = [self.precision]
        if self.resolution:
            parts.append(f"{self.resolution}px" + (f"+kd{self.kd_epochs}" if self.resolution_kd else ""))
        if self.prune:
            parts.append(f"prune{self.prune:g}+kd{self.kd_epochs}")
        if self.token_keep is not None:
            parts.append(f"{self.token_method}{self.token_keep:g}")
        if self.adapters:
            parts.append(self.adapters)
        if self.engine:
            parts.append(f"@{self.engine}")
        return " ".join(parts)


ADDED_KNOBS = {"resolution_kd": False, "engine": None}  # knobs added later: left out of ids at their default, so earlier sweeps still --resume


def _stable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in ADDED_KNOBS and v == ADDED_KNOBS[k])}


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class SearchSpace:
    """Lists of values per knob; ``None`` in a list means "off" (native resolution, no tokens, no adapters)."""

    precision: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    prune: list[float] = field(default_factory=lambda: [0.0])
    kd_epochs: list[int] = field(default_factory=lambda: [1])
    resolution: list[int | None] = field(default_factory=lambda: [None])
    resolution_kd: list[bool] = field(default_factory=lambda: [False])
    token_keep: list[float | None] = field(default_factory=lambda: [None])
    token_method: list[str] = field(default_factory=lambda: ["evit"])
    adapters: list[str | None] = field(default_factory=lambda: [None])
    calib_size: list[int] = field(default_factory=lambda: [300])
    engine: list[str | None] = field(default_factory=lambda: [None])  # e.g. ["none", "tflite"] on intel-cpu

    def __post_init__(self) -> None:
        bad = [p for p in self.precision if p not in PRECISIONS]
        if bad:
            raise DataError(f"unknown precision(s) in the search space: {', '.join(bad)}", f"allowed: {', '.join(PRECISIONS)}")
        for name in (f.name for f in dataclasses.fields(self)):
            if not getattr(self, name):
                raise DataError(f"search space knob '{name}' has no values")

    def configs(self) -> list[TrialConfig]:
        """Every distinct point, baseline (the first value of each knob) first."""
        names = [f.name for f in dataclasses.fields(self)]
        seen: dict[str, TrialConfig] = {}
        for values in itertools.product(*(getattr(self, n) for n in names)):
            cfg = TrialConfig(**dict(zip(names, values)))
            if cfg.token_keep is None:  # the method does not matter without token reduction
                cfg = dataclasses.replace(cfg, token_method="evit")
            if not cfg.resolution:  # distilling at the native size is not a knob
                cfg = dataclasses.replace(cfg, resolution_kd=False)
            if not cfg.prune and not cfg.resolution_kd:
                cfg = dataclasses.replace(cfg, kd_epochs=TrialConfig.kd_epochs)
            seen.setdefault(cfg.trial_id, cfg)
        return list(seen.values())

    def sample(self, n: int | None, seed: int = 0) -> list[TrialConfig]:
        """``n`` points: the baseline plus a seeded random pick of the rest (all of them when n is None)."""
        every = self.configs()
        if n is None or n >= len(every):
            return every
        if n < 1:
            raise DataError("--trials must be at least 1")
        rest = every[1:]
        picked = random.Random(seed).sample(range(len(rest)), n - 1)
        return [every[0]] + [rest[i] for i in sorted(picked)]


# Built-in spaces per model family. CNNs: resolution, INT8 and light pruning are the cheap knobs.
# ViTs: token reduction instead of resolution (position embeddings fix the input size).
BUILTIN: dict[str, SearchSpace] = {
    "cnn": SearchSpace(precision=["fp32", "fp16", "int8"], prune=[0.0, 0.2], resolution=[None, 192, 160]),
    "vit": SearchSpace(precision=["fp32", "int8"], token_keep=[None, 0.7, 0.5], token_method=["evit", "tome"]),
}


def builtin_space(family: str) -> SearchSpace:
    return dataclasses.replace(BUILTIN[family])


def _none(v: Any) -> Any:
    return None if isinstance(v, str) and v.lower() in ("none", "native", "off") else v


def load_space(path: str | Path) -> SearchSpace:
    """A ``[space]`` table from TOML; ``"none"`` stands for "off" (TOML has no null)."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"search space file '{path}' does not exist", "pass --space builtin or a .toml file with a [space] table")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"search space file '{path}' is not valid TOML: {exc}") from None
    table = data.get("space", data)
    known = {f.name for f in dataclasses.fields(SearchSpace)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise DataError(f"search space file '{path}' has unknown knobs: {', '.join(unknown)}", f"allowed: {', '.join(sorted(known))}")
    kwargs = {k: [_none(x) for x in (v if isinstance(v, list) else [v])] for k, v in table.items()}
    return SearchSpace(**kwargs)
