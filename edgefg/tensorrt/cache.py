"""Engine cache keyed by what makes a TensorRT engine valid: TensorRT version, GPU compute
capability, JetPack/L4T release, model sha256, precision (plus DLA core and batch).

Engines live in ``<bundle>/engines/`` (or ``--cache-dir`` / ``$EDGEFG_ENGINE_CACHE``) as
``<digest>.engine`` with a ``<digest>.json`` sidecar holding the key and the engine's sha256.
Metadata stays in the sidecar and the manifest — the engine file is exactly what TensorRT serialised.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgefg.errors import BundleError, TargetError
from edgefg.manifest import Manifest, sha256_file

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
KEY_VERSION = 1


class StaleEngineError(BundleError):
    """An engine built for another TensorRT/GPU/JetPack/model/precision than this one."""


@dataclass(frozen=True)
class DeviceInfo:
    """What the running machine offers TensorRT."""

    tensorrt: str  # e.g. "10.3.0"
    compute_capability: str  # e.g. "8.7"
    l4t: str | None = None  # Jetson Linux release, e.g. "36.4.3"; None off-Jetson
    gpu_name: str = ""


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str
    compute_capability: str
    l4t: str  # "none" off-Jetson
    model_sha256: str
    precision: str
    dla_core: int | None = None
    batch: int | None = None
    key_version: int = KEY_VERSION

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineKey":
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name in d})

    def differences(self, other: "EngineKey") -> list[str]:
        """Human-readable fields in which ``other`` (an existing engine) differs from this key."""
        names = {"tensorrt": "TensorRT", "compute_capability": "GPU compute capability", "l4t": "L4T/JetPack",
                 "model_sha256": "model sha256", "precision": "precision", "dla_core": "DLA core", "batch": "batch",
                 "key_version": "cache format"}
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                short = (lambda v: v[:12] + "…") if f.name == "model_sha256" else (lambda v: v)
                out.append(f"{names[f.name]} {short(b) if b is not None else '-'} (engine) vs {short(a) if a is not None else '-'} (here)")
        return out


def read_l4t(path: Path = TEGRA_RELEASE) -> str | None:
    """The Jetson Linux release from ``/etc/nv_tegra_release`` ("# R36 (release), REVISION: 4.3" → "36.4.3")."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def detect_device(trt: Any, cuda_device: Any, l4t_path: Path = TEGRA_RELEASE) -> DeviceInfo:
    """Device facts from the ``tensorrt`` module and a ``pycuda.driver.Device``."""
    major, minor = cuda_device.compute_capability()
    return DeviceInfo(str(trt.__version__), f"{major}.{minor}", read_l4t(l4t_path), str(cuda_device.name()))


def engine_key(manifest: Manifest, device: DeviceInfo, dla_core: int | None = None) -> EngineKey:
    sha = manifest.files.get(manifest.model_file)
    if not sha:
        raise BundleError(f"the manifest has no sha256 for '{manifest.model_file}'", "re-deploy the bundle")
    build = manifest.backend_options.get("engine", {})
    return EngineKey(
        tensorrt=device.tensorrt,
        compute_capability=device.compute_capability,
        l4t=device.l4t or "none",
        model_sha256=sha,
        precision=manifest.precision,
        dla_core=dla_core,
        batch=build.get("batch"),
    )


def engine_dir(bundle: Path, manifest: Manifest, override: str | Path | None = None) -> Path:
    """Where a bundle's engines live: ``override``, else ``$EDGEFG_ENGINE_CACHE/<bundle name>``, else
    ``<bundle>/<engine_dir from the manifest>``."""
    if override:
        return Path(override)
    env = os.environ.get("EDGEFG_ENGINE_CACHE")
    if env:
        return Path(env) / Path(bundle).resolve().name
    return Path(bundle) / manifest.backend_options.get("engine_dir", "engines")


class EngineCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        d = key.digest()
        return self.directory / f"{d}.engine", self.directory / f"{d}.json"

    def timing_cache_path(self, device: DeviceInfo) -> Path:
        """Timing caches are valid per TensorRT version and GPU; share one across the bundle's builds."""
        return self.directory / f"timing-trt{device.tensorrt}-sm{device.compute_capability.replace('.', '')}.cache"

    def has(self, key: EngineKey) -> bool:
        engine, sidecar = self.paths(key)
        return engine.is_file() and sidecar.is_file()

    def store(self, key: EngineKey, engine_bytes: bytes, build: dict[str, Any]) -> Path:
        """Write the engine then its sidecar (each via a temporary file + rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine, sidecar = self.paths(key)
        tmp = engine.with_suffix(".engine.tmp")
        tmp.write_bytes(engine_bytes)
        os.replace(tmp, engine)
        meta = {"key": key.to_dict(), "engine_sha256": sha256_file(engine), "engine_bytes": len(engine_bytes),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build": build}
        tmp = sidecar.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, sidecar)
        return engine

    def entries(self) -> list[tuple[EngineKey, Path]]:
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                out.append((EngineKey.from_dict(json.loads(p.read_text(encoding="utf-8"))["key"]), p))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def resolve(self, key: EngineKey) -> EngineKey:
        """``key`` if its engine exists, else the key of a DLA engine built for exactly this device and
        model (``build-engine --dla N``), so ``run`` needs no DLA option; else ``key`` unchanged."""
        if self.has(key) or key.dla_core is not None:
            return key
        for k, _ in self.entries():
            if k.dla_core is not None and k == EngineKey(**{**key.to_dict(), "dla_core": k.dla_core}) and self.has(k):
                return k
        return key

    def load(self, key: EngineKey, bundle: str | Path = "BUNDLE") -> bytes:
        """The serialised engine for exactly ``key``; never an engine built for anything else."""
        rebuild = f"rebuild it on this device: edgefg build-engine {bundle}"
        engine, sidecar = self.paths(key)
        if not (engine.is_file() and sidecar.is_file()):
            same_model = [(k, p) for k, p in self.entries() if k.model_sha256 == key.model_sha256] or self.entries()
            if same_model:
                k, p = same_model[0]
                raise StaleEngineError(
                    f"the TensorRT engine in '{self.directory}' was built for another setup ({'; '.join(key.differences(k))}); "
                    "engines are valid only for the TensorRT, GPU and JetPack that built them",
                    rebuild,
                )
            raise StaleEngineError(f"no TensorRT engine built for this device in '{self.directory}'", f"build it on the device: edgefg build-engine {bundle}")
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        stored = EngineKey.from_dict(meta.get("key", {}))
        if stored != key:
            raise StaleEngineError(f"engine sidecar '{sidecar.name}' does not match this device ({'; '.join(key.differences(stored))})", rebuild)
        if sha256_file(engine) != meta.get("engine_sha256"):
            raise StaleEngineError(f"engine file '{engine}' is corrupt (sha256 differs from its sidecar)", rebuild + " --force")
        return engine.read_bytes()


def check_build_request(manifest: Manifest, dla_core: int | None, fp16: bool | None, int8: bool | None) -> None:
    """Refuse builds the bundle cannot give: INT8 without Q/DQ, DLA cores the profile lacks, DLA in FP32."""
    build = manifest.backend_options.get("engine", {})
    if int8 and manifest.precision != "int8":
        raise TargetError(
            "this bundle is not quantized; TensorRT INT8 here is explicit quantization (Q/DQ) from an INT8 artifact "
            "(implicit calibration is deprecated since TensorRT 10.1)",
            "compress with --recipe int8 and deploy that artifact for this target",
        )
    if int8 is False and manifest.precision == "int8":
        raise TargetError("this bundle is INT8 (Q/DQ): it cannot be built without --int8", "drop --no-int8, or deploy an fp16/fp32 bundle")
    if dla_core is not None:
        cores = int(build.get("dla_cores", 0) or 0)
        if dla_core < 0 or dla_core >= cores:
            raise TargetError(
                f"DLA core {dla_core} requested but target '{manifest.target}' has {cores} DLA core(s)",
                "omit --dla (GPU only)" if cores == 0 else f"use --dla 0..{cores - 1}",
            )
        if manifest.precision == "fp32" and not fp16:
            raise TargetError("DLA runs only FP16 or INT8 layers", "deploy with --precision fp16 (or int8), or omit --dla")
