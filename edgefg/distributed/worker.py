"""``edgefg worker``: make this machine (a Jetson, a Pi, a NUC) a Ray node that advertises its target.

It is Ray's own ``ray start`` (no edgefg daemon), with two custom resources — ``edgefg-target:<profile>``
so the target's bench/validate tasks land here, and ``edgefg-timing: 1`` so only one timing task runs
here at a time — and with the thread settings that keep timing honest under Ray: OpenMP, ONNX Runtime
(via ``EDGEFG_NUM_THREADS``) and OpenVINO use this node's CPUs, and OpenVINO's CPU pinning is off
(``EDGEFG_OPENVINO_CPU_PINNING=0``), since pinned threads of concurrent workers fight over cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from edgefg.cli_support import handle_errors
from edgefg.distributed.cluster import THREAD_ENV, TIMING_RESOURCE, target_resource


def worker_env(cpus: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in THREAD_ENV:
        env[key] = str(cpus)
    env["EDGEFG_OPENVINO_CPU_PINNING"] = "0"
    return env


def ray_start_command(address: str, target: str | None, cpus: int, block: bool = True, extra: list[str] | None = None) -> list[str]:
    """``ray start`` for this node, run with this Python (so the node's workers import this edgefg)."""
    resources = {TIMING_RESOURCE: 1}
    if target:
        resources[target_resource(target)] = 1
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}", f"--num-cpus={cpus}",
           f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
    return cmd + (["--block"] if block else []) + list(extra or [])


@click.command("worker")
@click.option("--address", required=True, help="The Ray head, HOST:PORT (what `ray start --head` printed).")
@click.option("--target", help="Target profile this machine is (e.g. jetson-orin-nano, rpi5); its tasks will run here.")
@click.option("--num-cpus", type=int, help="CPUs to offer (default: all of this machine's).")
@click.option("--object-store-mb", type=int, help="Ray object store size (default: Ray's, 30% of memory).")
@click.option("--no-block", is_flag=True, help="Start the node and return (default: stay in the foreground like a service).")
@handle_errors
def worker_cmd(address, target, num_cpus, object_store_mb, no_block) -> None:
    """Join the Ray cluster at ADDRESS as a device node for --target (runtime extras only; no torch)."""
    from edgefg.distributed.cluster import require_ray
    from edgefg.errors import EdgefgError

    require_ray()
    if target:
        from edgefg.targets import load_target

        target = load_target(target).name  # an alias (jetson) → the profile name tasks ask for
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    extra = [f"--object-store-memory={object_store_mb * 1_000_000}"] if object_store_mb else []
    cmd = ray_start_command(address, target, cpus, block=not no_block, extra=extra)
    click.echo(f"edgefg worker: {cpus} CPU(s), resources {target_resource(target) if target else '(no target)'} + {TIMING_RESOURCE}; "
               f"OMP/ORT/OpenVINO threads = {cpus}, OpenVINO CPU pinning off", err=True)
    rc = subprocess.call(cmd, env=worker_env(cpus), cwd=Path.cwd())
    if rc != 0:
        raise EdgefgError(f"`ray start --address={address}` exited with status {rc}", "check that the head is reachable and runs the same Ray version")
