"""Connecting to Ray and the custom resources edgefg schedules with.

* ``edgefg-target:<profile>`` — a node that *is* that device (``edgefg worker --target``); bench and
  validate tasks for the target go there, so its numbers are the device's own.
* ``edgefg-timing`` — one unit per worker node: a timing task takes it, so only one timing task runs
  per node at a time.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from edgefg.errors import EdgefgError, MissingDependencyError

log = logging.getLogger(__name__)
TARGET_RESOURCE_PREFIX = "edgefg-target:"
TIMING_RESOURCE = "edgefg-timing"
# thread settings every Ray worker process should start with (oversubscription under Ray is a known
# trap: each task would otherwise start one thread per core of the machine)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "EDGEFG_NUM_THREADS")


def target_resource(profile: str) -> str:
    return TARGET_RESOURCE_PREFIX + profile


def require_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("ray", "distributed") from None
    return ray


def connect(address: str):
    """``local``: start a Ray on this machine (all its CPUs); otherwise join the cluster at ADDRESS.
    Returns (ray, owned): ``owned`` when this call started the connection (the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():  # an application (or a test) already connected: use that
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "log_to_driver": bool(os.environ.get("EDGEFG_RAY_LOGS"))}
    try:
        if address == "local":
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)  # a new one, never a `ray start` cluster found on this machine
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EdgefgError(f"cannot connect to Ray at '{address}': {str(exc).strip().splitlines()[0][:200]}",
                          "start the head with `ray start --head` and pass its HOST:PORT, or use --ray local") from None
    return ray, True


def alive_nodes(ray) -> dict[str, dict[str, float]]:
    """node id → its resources, for the nodes that are up."""
    return {n["NodeID"]: dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")}


def nodes_for_target(ray, profile: str) -> list[str]:
    key = target_resource(profile)
    return [nid for nid, res in alive_nodes(ray).items() if res.get(key, 0) > 0]
