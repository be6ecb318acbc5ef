"""Camera definitions for a multi-camera run: ``--source NAME=URI`` (repeatable) or ``--config cameras.toml``.

A cameras file::

    [defaults]              # optional: applies to every camera unless it sets its own
    smooth = "ema:0.6"
    min_confidence = 0.4

    [cameras.feeder]
    source = "rtsp://10.0.0.5/stream1"    # or source_env = "FEEDER_URL" / source_file = "/etc/edgefg/feeder.url"
    roi = "0.25,0.25,0.5,0.5"
    fps = 5                                # frame-rate cap
    stall_timeout = 10

    [cameras.pond]
    source = "/dev/video0"

Besides the source and ``fps``, a camera (or ``[defaults]``) sets the ``edgefg run`` options its sections
mark per-camera (:mod:`edgefg.runtime.loop.run_sections`: roi, stall_timeout, loop, smooth, min_confidence,
min_margin), under the option's name and checked by the option's own type; the rest come from the run.

Secrets in URLs (``rtsp://user:pw@…``) can be kept out of the file and the command line with
``source_env`` (an environment variable) or ``source_file`` (a file holding the URL).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edgefg.errors import EdgefgError, InputPathError
from edgefg.runtime.loop.run_sections import camera_overridable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # safe as an MQTT topic level, a URL parameter and a label value
DEFAULT_NAME = "default"


@dataclass
class CameraConfig:
    """One camera: a name, where its frames come from, its frame-rate cap, and the run options it sets for
    itself (``overrides``: RunOptions fields a section marks per-camera — roi, smooth, min_confidence,
    min_margin, stall_timeout_s, loop; the rest come from the run)."""

    name: str
    source: str
    fps: float | None = None  # frame-rate cap (None = as fast as the model allows)
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = {f for f, _ in camera_overridable().values()}
        unknown = set(self.overrides) - allowed
        if unknown:
            raise EdgefgError(f"camera '{self.name}' cannot set {', '.join(sorted(unknown))} for itself", f"a camera may set: {', '.join(sorted(allowed))}")

    def options(self, run: Any) -> Any:
        """The run's options (a ``RunOptions``) as this camera sees them: with its overrides."""
        return dataclasses.replace(run, **self.overrides) if self.overrides else run


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise EdgefgError(f"bad camera name '{name}'", "use 1-64 letters, digits, '_' or '-' (it becomes an MQTT topic level and a metric label)")
    return name


def parse_source_args(values: list[str] | tuple[str, ...]) -> list[CameraConfig]:
    """``--source`` values → cameras. One value without ``NAME=`` = the classic single-source run
    (camera name ``default``); several values must all be named."""
    cams: list[CameraConfig] = []
    for v in values:
        name, sep, uri = v.partition("=")
        # "NAME=URI" only when the part before '=' is a plain name (a URL query string also holds '=')
        if sep and NAME_RE.match(name) and "://" not in name and "/" not in name:
            cams.append(CameraConfig(check_name(name), uri))
        elif len(values) == 1:
            cams.append(CameraConfig(DEFAULT_NAME, v))
        else:
            raise EdgefgError(f"--source '{v}' has no camera name", "with several sources name each one: --source feeder=rtsp://... --source pond=0")
    _unique(cams)
    return cams


def _unique(cams: list[CameraConfig]) -> None:
    seen: set[str] = set()
    for c in cams:
        if c.name in seen:
            raise EdgefgError(f"camera name '{c.name}' is used twice", "give every camera its own name")
        seen.add(c.name)


def load_cameras(path: str | Path) -> list[CameraConfig]:
    """Read a cameras TOML file (see the module docstring); every mistake is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise InputPathError(f"camera config '{p}' does not exist")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgefgError(f"camera config '{p}' is not valid TOML: {exc}") from None
    defaults = doc.get("defaults", {})
    cams_doc = doc.get("cameras")
    if not isinstance(cams_doc, dict) or not cams_doc:
        raise EdgefgError(f"camera config '{p}' has no [cameras.NAME] tables", "see `edgefg run --help` for an example")
    if not isinstance(defaults, dict):
        raise EdgefgError(f"camera config '{p}': [defaults] must be a table")
    keys = camera_overridable()
    known = ", ".join(sorted({*keys, "fps", "source", "source_env", "source_file"}))
    cams = []
    for name, table in cams_doc.items():
        if not isinstance(table, dict):
            raise EdgefgError(f"camera config '{p}': cameras.{name} must be a table")
        merged: dict[str, Any] = {**defaults, **table}
        src = _source_of(name, merged, p)
        fps = None
        overrides: dict[str, Any] = {}
        for key, value in merged.items():
            where = f"camera config '{p}': cameras.{name}.{key}"
            if key in ("source", "source_env", "source_file"):
                continue
            if key == "fps":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise EdgefgError(f"{where} has the wrong type ({type(value).__name__})", "give frames per second as a number")
                if value <= 0:
                    raise EdgefgError(f"{where} must be > 0, got {value}")
                fps = value
                continue
            if key not in keys:
                raise EdgefgError(f"camera config '{p}': unknown key '{key}' in cameras.{name}", f"known keys: {known}")
            field_name, param = keys[key]
            overrides[field_name] = _convert(where, key, value, param)
        cams.append(CameraConfig(check_name(str(name)), src, fps, overrides))
    _unique(cams)
    return cams


def _convert(where: str, key: str, value: Any, param: click.Parameter) -> Any:
    """A cameras-file value checked by the ``run`` option's own type (the range of --min-confidence, …)."""
    if key == "roi" and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    flag = getattr(param, "is_flag", False)
    if flag != isinstance(value, bool) or (not flag and isinstance(value, str) != (param.type is click.STRING)):
        raise EdgefgError(f"{where} has the wrong type ({type(value).__name__})",
                          "true or false" if flag else "a string" if param.type is click.STRING else "a number")
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter as exc:
        raise EdgefgError(f"{where}: {exc.message}") from None


def _source_of(name: str, table: dict[str, Any], path: Path) -> str:
    given = [k for k in ("source", "source_env", "source_file") if k in table]
    if len(given) != 1:
        raise EdgefgError(f"camera config '{path}': cameras.{name} needs exactly one of source, source_env, source_file")
    key, value = given[0], table[given[0]]
    if not isinstance(value, str) or not value:
        raise EdgefgError(f"camera config '{path}': cameras.{name}.{key} must be a non-empty string")
    if key == "source":
        return value
    if key == "source_env":
        if value not in os.environ:
            raise EdgefgError(f"camera '{name}': environment variable {value} (source_env) is not set")
        return os.environ[value].strip()
    f = Path(value)
    if not f.is_file():
        raise InputPathError(f"camera '{name}': source_file '{f}' does not exist")
    return f.read_text(encoding="utf-8").strip()
