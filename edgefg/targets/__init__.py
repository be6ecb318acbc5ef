"""Target device profiles — data files (TOML) shipped in ``profiles/``; users may pass their own.

No device name appears in logic: deploy reads the backend, format, precisions, layout and
budgets from the profile.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgefg.errors import InputPathError, TargetError

PROFILE_DIR = Path(__file__).parent / "profiles"
# [budget] keys a profile may set: what `edgefg tune` uses for a limit its command line does not give
BUDGET_KEYS = ("max_top1_drop", "max_class_drop", "max_latency_ms", "max_size_mb")


ENGINE_KEYS = {"format", "precisions", "layout", "static_shapes", "device", "runtime", "device_install", "notes"}


@dataclass
class Target:
    name: str
    description: str
    family: str
    backend: str  # runtime backend on the device
    format: str  # model format deploy must produce
    precisions: list[str]  # the first is the default
    status: str = "available"  # available | planned
    status_note: str = ""
    device: str | None = None  # engine device name (OpenVINO: CPU/GPU/NPU)
    layout: str = "NCHW"
    static_shapes: bool = False
    aliases: list[str] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    device_info: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)  # BUDGET_KEYS: the defaults `edgefg tune` applies per target
    unsupported_ops: list[str] = field(default_factory=list)  # ONNX op types deploy refuses for this target
    device_install: str = ""
    notes: str = ""
    # other engines that run on this same device: name → the keys that differ (format, precisions, layout,
    # static_shapes, device, runtime, device_install, notes); `deploy --engine` / tune's engine knob pick one
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str = ""

    def with_engine(self, engine: str | None) -> Target:
        """This device with another engine from ``[engines.NAME]`` (None or the default backend: itself)."""
        if engine is None or engine == self.backend:
            return self
        if engine not in self.engines:
            raise TargetError(f"target '{self.name}' has no engine '{engine}'",
                              f"engines for {self.name}: {', '.join([self.backend, *self.engines])}")
        return dataclasses.replace(self, backend=engine, engines={}, **self.engines[engine])

    @property
    def available(self) -> bool:
        return self.status == "available"

    def require_available(self) -> Target:
        """This target, or a one-line error when its profile is only planned."""
        if not self.available:
            raise TargetError(f"target '{self.name}' is not available yet: {self.status_note}", "see `edgefg targets` for the available ones")
        return self

    @classmethod
    def from_file(cls, path: Path) -> Target:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TargetError(f"target file '{path}' is not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TargetError(f"target file '{path}' has unknown keys: {', '.join(unknown)}", f"allowed: {', '.join(sorted(known))}")
        missing = [k for k in ("name", "description", "family", "backend", "format", "precisions") if k not in data]
        if missing:
            raise TargetError(f"target file '{path}' lacks required keys: {', '.join(missing)}")
        for name, eng in (data.get("engines") or {}).items():
            bad = sorted(set(eng) - ENGINE_KEYS)
            if bad or "format" not in eng:
                raise TargetError(f"target file '{path}': [engines.{name}] " + (f"has unknown keys: {', '.join(bad)}" if bad else "needs a format"),
                                  f"allowed: {', '.join(sorted(ENGINE_KEYS))}")
        bad_budget = sorted(set(data.get("budget") or {}) - set(BUDGET_KEYS))
        if bad_budget:
            raise TargetError(f"target file '{path}' has unknown [budget] keys: {', '.join(bad_budget)}", f"allowed: {', '.join(BUDGET_KEYS)}")
        return cls(**data, path=str(path))

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise TargetError(
                f"target '{self.name}' does not support precision '{precision}'",
                f"supported: {', '.join(self.precisions)}",
            )


def list_targets() -> list[Target]:
    return [Target.from_file(p) for p in sorted(PROFILE_DIR.glob("*.toml"))]


def load_target(name_or_path: str | Path) -> Target:
    """A built-in profile by name or alias (e.g. ``jetson``), or a user's ``.toml`` file."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise InputPathError(f"target file '{path}' does not exist")
        return Target.from_file(path)
    targets = list_targets()
    for t in targets:
        if t.name == text:
            return t
    for t in targets:
        if text in t.aliases:
            return t
    from edgefg.lazy import did_you_mean

    guess = did_you_mean(text, [t.name for t in targets] + [a for t in targets for a in t.aliases])
    raise TargetError(
        f"unknown target '{text}'",
        f"{guess}known targets: {', '.join(t.name for t in targets)} (see: edgefg targets), or pass a profile .toml",
    )
