"""The sweep's Ray tasks: thin wrappers over :mod:`edgefg.tune.work` that add shipping and the node id."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def compress_task(opts, cfg) -> dict[str, Any]:
    from edgefg.tune.work import build_artifact

    return {**build_artifact(opts, cfg), "node": node_id()}


def deploy_task(opts, cfg, artifact: dict[str, Any], target: str, ship: bool) -> dict[str, Any]:
    """Deploy on the driver's node; ``ship``: also return the bundle as bytes for a device node."""
    from edgefg.distributed.shipping import pack_dir
    from edgefg.tune.work import deploy_bundle

    dep = deploy_bundle(opts, cfg, artifact, target)
    if ship and not dep.get("error"):
        dep["packed"] = pack_dir(dep["bundle"])
    return dep


def measure_task(dep: dict[str, Any], samples, reference, opts, on_target: bool, threads: int | None) -> dict[str, Any]:
    """Validate + bench one bundle on whichever node Ray placed this task (the target's own node when
    ``on_target``; the bundle then arrives as bytes, the images chunk by chunk into a node-local cache)."""
    from edgefg.distributed.shipping import PackedSamples, StreamedSamples, unpack_dir
    from edgefg.tune.work import measure_bundle

    if dep.get("error"):
        return {"error": dep["error"]}
    if threads:
        os.environ["EDGEFG_NUM_THREADS"] = str(threads)
    work = None
    try:
        bundle = dep["bundle"]
        if dep.get("packed") is not None:
            work = tempfile.mkdtemp(prefix="edgefg-bundle-")
            bundle = unpack_dir(dep["packed"], work)
        if isinstance(samples, (PackedSamples, StreamedSamples)):
            packed, samples = samples, samples.materialize()
            reference = packed.relocate(reference, samples)
        result = measure_bundle(bundle, samples, reference, opts, on_target=on_target, node=node_id(), num_threads=threads)
        result["hostname"] = os.uname().nodename
        return result
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
