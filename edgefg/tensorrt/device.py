"""What GPU this is, without needing pycuda: the facts an engine is bound to.

A TensorRT engine is specific to the exact GPU (not only its compute capability: Orin Nano, NX and
AGX all report SM 8.7 and "Orin (nvgpu)"), the TensorRT version and the CUDA it runs with. The
probes, tried in this order (a registry, first that answers wins):

- ``pycuda``: ``pycuda.driver.Device`` (compute capability, name, SM count, driver version);
- ``cuda-python``: the CUDA driver API (``cuDeviceGetAttribute``), for devices where pycuda does not build;
- ``nvidia-smi``: ``--query-gpu=name,compute_cap`` (no SM count);
- ``device-tree``: ``/proc/device-tree/compatible`` on a Jetson (tegra234 → 8.7, ...; no SM count).

On a Jetson the GPU *model* is always the module from the device tree (``model`` plus the
``pNNNN-NNNN`` module id), whichever probe answered, so build-engine (maybe without pycuda) and the
runtime (with pycuda) compute the same key. The CUDA version is the toolkit's
(``/usr/local/cuda/version.json`` or ``version.txt``), else the driver's.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefg.errors import UnsupportedError

# /proc/device-tree/compatible: the SoC entry → CUDA compute capability of its integrated GPU.
TEGRA_SM = {"tegra210": "5.3", "tegra186": "6.2", "tegra194": "7.2", "tegra234": "8.7"}


@dataclass(frozen=True)
class GpuFacts:
    compute_capability: str
    name: str
    sm_count: int | None = None
    driver_cuda: str | None = None  # "12.6" from cuDriverGetVersion
    source: str = ""


@dataclass(frozen=True)
class SystemPaths:
    """Roots of the files read (tests point them at a temporary tree)."""

    device_tree: Path = Path("/proc/device-tree")
    cuda_home: Path = Path("/usr/local/cuda")
    tegra_release: Path = Path("/etc/nv_tegra_release")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def jetson_module(paths: SystemPaths = SystemPaths()) -> tuple[str, str, str] | None:
    """(model, module id, SoC) of a Jetson from the device tree, else None.

    ``model`` is e.g. "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", the
    module id e.g. "p3767-0005" (Orin Nano 8 GB), the SoC e.g. "tegra234"."""
    compat = _read_text(paths.device_tree / "compatible")
    if not compat:
        return None
    entries = [e for e in compat.split("\x00") if e]
    soc = next((e.split(",", 1)[1] for e in entries if re.fullmatch(r"nvidia,tegra\d+", e)), None)
    if soc is None:
        return None
    modules = [m.group(1) for e in entries if (m := re.fullmatch(r"nvidia,(p\d{4}-\d{4})", e))]
    carrier = [e.rsplit("+", 1)[1] for e in entries if "+" in e]  # "nvidia,p3768-0000+p3767-0005"
    module = modules[0] if modules else (carrier[0] if carrier else "")
    model = (_read_text(paths.device_tree / "model") or "").strip("\x00 \n") or f"Jetson ({soc})"
    return model, module, soc


def cuda_toolkit_version(paths: SystemPaths = SystemPaths()) -> str | None:
    """"12.6" from ``version.json`` (CUDA ≥ 11.1) or "10.2" from ``version.txt`` (JetPack 4)."""
    text = _read_text(paths.cuda_home / "version.json")
    if text:
        try:
            v = json.loads(text)["cuda"]["version"]
            return ".".join(str(v).split(".")[:2])
        except (ValueError, KeyError, TypeError):
            pass
    text = _read_text(paths.cuda_home / "version.txt")
    m = re.search(r"CUDA Version\s+(\d+)\.(\d+)", text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _cuda_int_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


# -- probes ---------------------------------------------------------------------------------------
def probe_pycuda(index: int = 0, **_: Any) -> GpuFacts | None:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    try:
        cuda.init()
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        return GpuFacts(f"{major}.{minor}", str(dev.name()), int(sms), _cuda_int_version(int(cuda.get_driver_version())), "pycuda")
    except cuda.Error:
        return None


def probe_cuda_python(index: int = 0, **_: Any) -> GpuFacts | None:
    """The CUDA driver API through NVIDIA's ``cuda-python`` (``cuda.bindings.driver``, or ``cuda.cuda`` before 12.6)."""
    try:
        from cuda.bindings import driver as drv  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as drv  # older cuda-python
        except ImportError:
            return None
    ok = drv.CUresult.CUDA_SUCCESS

    def call(fn, *args):
        res = fn(*args)
        err, rest = res[0], res[1:]
        if err != ok:
            raise RuntimeError(str(err))
        return rest[0] if len(rest) == 1 else rest

    try:
        call(drv.cuInit, 0)
        dev = call(drv.cuDeviceGet, index)
        attr = drv.CUdevice_attribute
        major = call(drv.cuDeviceGetAttribute, attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        minor = call(drv.cuDeviceGetAttribute, attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        sms = call(drv.cuDeviceGetAttribute, attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)
        name = call(drv.cuDeviceGetName, 256, dev)
        version = call(drv.cuDriverGetVersion)
    except Exception:  # noqa: BLE001 - no driver library (cuda.pathfinder raises its own error type), no device
        return None
    name = bytes(name).split(b"\x00", 1)[0].decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return GpuFacts(f"{major}.{minor}", name, int(sms), _cuda_int_version(int(version)), "cuda-python")


def probe_nvidia_smi(index: int = 0, run: Callable[..., Any] = subprocess.run, **_: Any) -> GpuFacts | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = run([exe, f"--id={index}", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    parts = [p.strip() for p in out.stdout.strip().splitlines()[0].split(",")] if out.stdout.strip() else []
    if len(parts) < 2 or not re.fullmatch(r"\d+\.\d+", parts[1]):
        return None  # old drivers do not know compute_cap
    return GpuFacts(parts[1], parts[0], None, None, "nvidia-smi")


def probe_device_tree(index: int = 0, paths: SystemPaths = SystemPaths(), **_: Any) -> GpuFacts | None:
    jetson = jetson_module(paths)
    if jetson is None or jetson[2] not in TEGRA_SM:
        return None
    return GpuFacts(TEGRA_SM[jetson[2]], jetson[0], None, None, "device-tree")


PROBES: dict[str, Callable[..., GpuFacts | None]] = {
    "pycuda": probe_pycuda,
    "cuda-python": probe_cuda_python,
    "nvidia-smi": probe_nvidia_smi,
    "device-tree": probe_device_tree,
}


def probe_gpu(index: int = 0, paths: SystemPaths = SystemPaths(), probes: dict[str, Callable[..., GpuFacts | None]] | None = None) -> GpuFacts:
    """The first probe that answers, with the Jetson module as the GPU name; raises when none does."""
    tried = []
    for name, probe in (probes or PROBES).items():
        facts = probe(index=index, paths=paths)
        if facts is not None:
            jetson = jetson_module(paths)
            if jetson is not None:
                model, module, _ = jetson
                facts = replace(facts, name=f"{model} [{module}]" if module else model)
            return facts
        tried.append(name)
    raise UnsupportedError(
        f"cannot find a CUDA GPU here (tried: {', '.join(tried)})",
        "run on the Jetson/GPU host; install pycuda or cuda-python (pip install cuda-python), or make nvidia-smi available",
    )
