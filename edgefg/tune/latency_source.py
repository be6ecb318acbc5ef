"""Where a trial's latency comes from, and whether it may rank that target's configurations by speed.

A latency is the **device**'s (measured on the target's own Ray node), this **host**'s (the target's
engine on a device of the target's kind: intel-cpu on an x86 workstation), or a **stand-in**'s (another
engine, another compute device or another CPU architecture than the target's). Each rule below is one
way a host can differ from the target; a stand-in may rank speed only when every rule that fired says
the ordering transfers (the same engine on another CPU), never its milliseconds against a budget.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgefg.errors import EdgefgError

# machine names that mean the same architecture as a profile's ``[device_info] arch``
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
# the variable a backend reads to run a bundle on another device than it was deployed for (one row per backend)
DEVICE_OVERRIDE_ENV = {"openvino": "EDGEFG_OPENVINO_DEVICE"}


@dataclass(frozen=True)
class Measured:
    """What ran: the bundle's backend/device/target and the engine and machine that timed it."""

    target: str | None
    bundle_backend: str  # the engine the bundle was deployed for
    ran_backend: str  # the engine that ran it here (a host stand-in for a device-only one)
    bundle_device: str | None = None  # the engine device it was deployed for (OpenVINO CPU/GPU/NPU)
    ran_device: str | None = None
    target_arch: str | None = None  # the profile's [device_info] arch (None: any)
    host_arch: str = ""
    host_cpu: str = ""


@dataclass(frozen=True)
class Difference:
    reason: str  # "onnxruntime, not tensorrt"
    ordering_transfers: bool  # whether configurations keep their speed order across this difference


def _engine(m: Measured) -> Difference | None:
    if m.ran_backend == m.bundle_backend:
        return None
    return Difference(f"{m.ran_backend}, not {m.bundle_backend}", False)


def _device(m: Measured) -> Difference | None:
    if not m.bundle_device or (m.ran_device or m.bundle_device) == m.bundle_device:
        return None
    return Difference(f"{m.bundle_backend} on {m.ran_device}, not {m.bundle_device}", False)


def _arch(m: Measured) -> Difference | None:
    if not m.target_arch or not m.host_arch or normal_arch(m.target_arch) == normal_arch(m.host_arch):
        return None
    # the same engine and kernels family on another CPU: the order of configurations transfers, the milliseconds do not
    return Difference(f"the host's {normal_arch(m.host_arch)} CPU, not the device's {normal_arch(m.target_arch)}", True)


# how a host measurement can differ from the target's own (first reason first in the text)
DIFFERENCES: tuple[Callable[[Measured], Difference | None], ...] = (_engine, _device, _arch)


@dataclass(frozen=True)
class LatencySource:
    kind: str  # device | host | stand-in
    text: str  # one line for tables, JSON and plots
    ranks_speed: bool  # may this latency order the target's configurations by speed?

    @property
    def stand_in(self) -> bool:
        return self.kind == "stand-in"

    def fields(self) -> dict[str, Any]:
        """The keys a tune row carries (``stand_in``, ``latency_source``, ``latency_kind``, ``latency_ranks_speed``)."""
        d = asdict(self)
        return {"stand_in": self.stand_in, "latency_source": d["text"], "latency_kind": d["kind"], "latency_ranks_speed": d["ranks_speed"]}


def normal_arch(name: str) -> str:
    return ARCH_ALIASES.get(name.lower(), name.lower())


def classify(m: Measured, on_device: bool = False, node: str = "") -> LatencySource:
    """The :class:`LatencySource` of one measurement."""
    if on_device:
        return LatencySource("device", f"device: {m.ran_backend} on {m.target or 'the target'}'s node {node}".rstrip(), True)
    found = [d for d in (rule(m) for rule in DIFFERENCES) if d is not None]
    where = f"{m.ran_backend} on this host ({m.host_cpu or 'unknown CPU'}, {normal_arch(m.host_arch)})"
    if not found:
        return LatencySource("host", f"this host: {where}", True)
    why = "; ".join(d.reason for d in found)
    return LatencySource("stand-in", f"stand-in: {where} for {m.bundle_backend} on {m.target or 'the device'} ({why})",
                         all(d.ordering_transfers for d in found))


def measured_of(manifest: Any, ran_backend: str | None, host_cpu: str) -> Measured:
    """The :class:`Measured` of a bundle (its manifest) run here by ``ran_backend`` (None: its own)."""
    from edgefg.targets import load_target

    arch = None
    try:
        arch = load_target(manifest.target).device_info.get("arch") if manifest.target else None
    except EdgefgError:  # a user's profile file that is not on this machine any more: arch unknown
        arch = None
    device = (manifest.backend_options or {}).get("device")
    env = DEVICE_OVERRIDE_ENV.get(manifest.backend)
    ran = ran_backend or manifest.backend
    ran_device = (os.environ.get(env) if env and ran == manifest.backend else None) or device
    return Measured(manifest.target, manifest.backend, ran, device, ran_device, arch, platform.machine(), host_cpu)


def source_of_row(row: dict[str, Any], target: str) -> LatencySource:
    """A row's source; rows written before sources were recorded are judged from their ``runtime`` text
    ("onnxruntime (stand-in for tensorrt)") and the target's profile."""
    if "latency_kind" in row:
        return LatencySource(row["latency_kind"], row["latency_source"], bool(row["latency_ranks_speed"]))
    from edgefg.targets import load_target

    text = str(row.get("runtime") or "")
    ran = text.split(" ")[0]
    bundle_backend = text.split("stand-in for ", 1)[1].rstrip(")") if "stand-in for " in text else ran
    try:
        tgt = load_target(target)
        arch, device = tgt.device_info.get("arch"), tgt.device
    except EdgefgError:
        arch, device = None, None
    m = Measured(target, bundle_backend, ran, device, device, arch, platform.machine(), "")
    on_device = not str(row.get("node", "local:")).startswith("local:") and not row.get("stand_in", True)
    return classify(m, on_device, str(row.get("node", "")))
