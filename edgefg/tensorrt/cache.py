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
from edgefg.formats import ENGINE_DIR
from edgefg.manifest import Manifest, sha256_file
from edgefg.outputs import write_bytes, write_text

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
KEY_VERSION = 2  # 2: + GPU model, SM count, CUDA version and the precision flags actually used


class StaleEngineError(BundleError):
    """An engine built for another TensorRT/GPU/CUDA/JetPack/model/precision than this one."""


@dataclass(frozen=True)
class DeviceInfo:
    """What the running machine offers TensorRT."""

    tensorrt: str  # e.g. "10.3.0"
    compute_capability: str  # e.g. "8.7"
    l4t: str | None = None  # Jetson Linux release, e.g. "36.4.3"; None off-Jetson
    gpu_name: str = ""  # Jetson: device-tree model + module id; else the CUDA device name
    sm_count: int | None = None  # None when only nvidia-smi / the device tree answered
    cuda: str | None = None  # CUDA toolkit "12.6" (else the driver's)
    source: str = ""  # which probe answered (not part of the key)


@dataclass(frozen=True)
class EngineKey:
    tensorrt: str
    compute_capability: str
    l4t: str  # "none" off-Jetson
    model_sha256: str
    precision: str  # the bundle's precision
    dla_core: int | None = None
    batch: int | None = None
    gpu: str = ""
    sm_count: int | None = None
    cuda: str | None = None
    fp16: bool = False  # the builder flags actually set (--fp16 on an fp32 bundle is another engine)
    int8: bool = False
    key_version: int = KEY_VERSION

    BUILD_FIELDS = ("fp16", "int8", "dla_core")  # chosen by build-engine; the runtime finds them

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        return cls(**{f.name: d.get(f.name) for f in fields(cls) if f.name in d})

    def same_device_and_model(self, other: EngineKey) -> bool:
        """Equal in everything but the build choices (precision flags, DLA core)."""
        a, b = self.to_dict(), other.to_dict()
        return all(a[k] == b[k] for k in a if k not in self.BUILD_FIELDS)

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable fields in which ``other`` (an existing engine) differs from this key."""
        names = {"tensorrt": "TensorRT", "compute_capability": "GPU compute capability", "l4t": "L4T/JetPack",
                 "model_sha256": "model sha256", "precision": "precision", "dla_core": "DLA core", "batch": "batch",
                 "gpu": "GPU", "sm_count": "SM count", "cuda": "CUDA", "fp16": "FP16 flag", "int8": "INT8 flag",
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


def detect_device(trt: Any, gpu: Any = None, paths: Any = None, index: int = 0) -> DeviceInfo:
    """Device facts from the ``tensorrt`` module and a GPU probe (:mod:`edgefg.tensorrt.device`);
    ``gpu`` is a :class:`~edgefg.tensorrt.device.GpuFacts` (probed when None)."""
    from edgefg.tensorrt.device import SystemPaths, cuda_toolkit_version, probe_gpu

    paths = paths or SystemPaths(tegra_release=TEGRA_RELEASE)
    gpu = gpu or probe_gpu(index, paths)
    cuda = cuda_toolkit_version(paths) or gpu.driver_cuda
    return DeviceInfo(str(trt.__version__), gpu.compute_capability, read_l4t(paths.tegra_release), gpu.name, gpu.sm_count, cuda, gpu.source)


def engine_key(manifest: Manifest, device: DeviceInfo, dla_core: int | None = None, fp16: bool | None = None, int8: bool | None = None) -> EngineKey:
    """The key of an engine of ``manifest`` built on ``device`` with these flags (default: the manifest's)."""
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
        gpu=device.gpu_name,
        sm_count=device.sm_count,
        cuda=device.cuda,
        fp16=bool(build.get("fp16", manifest.precision in ("fp16", "int8")) if fp16 is None else fp16),
        int8=bool(build.get("int8", manifest.precision == "int8") if int8 is None else int8),
    )


def engine_dir(bundle: Path, manifest: Manifest, override: str | Path | None = None) -> Path:
    """Where a bundle's engines live: ``override``, else ``$EDGEFG_ENGINE_CACHE/<bundle name>``, else
    ``<bundle>/<engine_dir from the manifest>``."""
    if override:
        return Path(override)
    env = os.environ.get("EDGEFG_ENGINE_CACHE")
    if env:
        return Path(env) / Path(bundle).resolve().name
    return Path(bundle) / manifest.backend_options.get("engine_dir", ENGINE_DIR)


class EngineCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        d = key.digest()
        return self.directory / f"{d}.engine", self.directory / f"{d}.json"

    def timing_cache_path(self, device: DeviceInfo) -> Path:
        """Timing caches are valid per TensorRT version and exact GPU; share one across the bundle's builds."""
        gpu = hashlib.sha256(f"{device.gpu_name}|{device.sm_count}|{device.cuda}".encode()).hexdigest()[:8]
        return self.directory / f"timing-trt{device.tensorrt}-sm{device.compute_capability.replace('.', '')}-{gpu}.cache"

    def has(self, key: EngineKey) -> bool:
        engine, sidecar = self.paths(key)
        return engine.is_file() and sidecar.is_file()

    def store(self, key: EngineKey, engine_bytes: bytes, build: dict[str, Any]) -> Path:
        """Write the engine then its sidecar (each atomically: a temporary file + rename)."""
        engine, sidecar = self.paths(key)
        write_bytes(engine, engine_bytes)
        meta = {"key": key.to_dict(), "engine_sha256": sha256_file(engine), "engine_bytes": len(engine_bytes),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build": build}
        write_text(sidecar, json.dumps(meta, indent=2) + "\n")
        return engine

    def entries(self) -> list[tuple[EngineKey, Path]]:
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                out.append((EngineKey.from_dict(json.loads(p.read_text(encoding="utf-8"))["key"]), p))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def built_at(self, key: EngineKey) -> str:
        try:
            return json.loads(self.paths(key)[1].read_text(encoding="utf-8")).get("built", "")
        except (OSError, ValueError):
            return ""

    def resolve(self, key: EngineKey, exact: bool = False) -> EngineKey:
        """``key`` if its engine exists; else (unless ``exact``) the newest engine built for exactly
        this device and model with other build choices (``build-engine --dla N`` / ``--fp16``), so
        ``run`` needs no build options; else ``key`` unchanged (``load`` then explains)."""
        if self.has(key) or exact:
            return key
        matches = [k for k, _ in self.entries() if k.same_device_and_model(key) and self.has(k)]
        return max(matches, key=self.built_at) if matches else key

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
