"""The Ray engine of ``edgefg tune``: the same work functions as the in-process engine, as Ray tasks.

Why Ray tasks and not Ray Tune: a sweep here is a fixed grid whose trials share work (one
compressed artifact serves every target and both float precisions) and whose measurement must
land on a particular node (the device that advertises ``edgefg-target:<profile>``). Tune's unit is an
independent trial reporting metrics from one trainable; sharing artifacts across trials and
placing parts of a trial on different nodes would fight it, and its experiment state would
duplicate our per-trial result files (which ``--resume`` already uses). Tasks with object-ref
dependencies express the DAG directly: compress(key) → deploy(trial, target) → measure(trial, target).

Placement: compress and deploy write into TUNE_DIR, so they are pinned to the driver's node; each
takes all its CPUs, so nothing else runs beside them there (torch and NNCF use every core). Measuring
is a timing task: on a device node it takes that node's ``edgefg-timing`` unit (one at a time);
on the driver's node (the stand-in) it again takes all CPUs.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edgefg.distributed.cluster import TIMING_RESOURCE, alive_nodes, connect, nodes_for_target, target_resource
from edgefg.tune.engine import Sweep
from edgefg.tune.space import TrialConfig
from edgefg.tune.work import finish_trial, one_line

log = logging.getLogger(__name__)


class RayEngine:
    name = "ray"

    def __init__(self, address: str):
        self.address = address
        self.ray, self._owned = connect(address)
        self._description = self._describe()

    def describe(self) -> str:
        return self._description

    def _describe(self) -> str:
        nodes = alive_nodes(self.ray)
        targets = sorted({k.split(":", 1)[1] for res in nodes.values() for k in res if k.startswith("edgefg-target:")})
        return f"ray {self.address} ({len(nodes)} node(s)" + (f"; device nodes for {', '.join(targets)}" if targets else "") + ")"

    def close(self) -> None:
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()

    def run(self, sweep: Sweep, pending: list[TrialConfig], on_result: Callable[[dict[str, Any]], None]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from edgefg.distributed import tasks
        from edgefg.distributed.shipping import StreamedSamples

        ray, opts = self.ray, sweep.opts
        driver = ray.get_runtime_context().get_node_id()
        nodes = alive_nodes(ray)
        host_cpus = max(1, int(nodes[driver].get("CPU", 1)))
        pinned = {"scheduling_strategy": NodeAffinitySchedulingStrategy(driver, soft=False), "num_cpus": host_cpus}
        compress = ray.remote(tasks.compress_task).options(**pinned, max_retries=0)
        deploy = ray.remote(tasks.deploy_task).options(**pinned, max_retries=0)
        measure = ray.remote(tasks.measure_task)
        on_device = {t: nodes_for_target(ray, t) for t in opts.targets}
        for t, ids in on_device.items():
            log.info("target %s: %s", t, f"{len(ids)} device node(s)" if ids else "no device node, host stand-in")
        reference = ray.put(sweep.reference)
        local_samples = ray.put(list(sweep.samples))
        # device nodes copy the images from this node chunk by chunk (paths + digest travel, not the bytes)
        packed_samples = ray.put(StreamedSamples.from_samples(sweep.samples, driver)) if any(on_device.values()) else None

        artifacts: dict[str, Any] = {sweep.reference_artifact["compress_key"]: {**sweep.reference_artifact, "reused": True}}
        waiting: dict[Any, tuple[TrialConfig, str]] = {}
        results: dict[str, dict[str, Any]] = {c.trial_id: {} for c in pending}
        started: dict[str, float] = {}
        for cfg in pending:
            if cfg.compress_key not in artifacts:
                artifacts[cfg.compress_key] = compress.remote(opts, cfg)
            started[cfg.trial_id] = time.time()
            for target in opts.targets:
                device = bool(on_device[target])
                dep = deploy.remote(opts, cfg, artifacts[cfg.compress_key], target, device)
                if device:
                    ref = measure.options(num_cpus=1, resources={target_resource(target): 1, TIMING_RESOURCE: 1}, max_retries=0).remote(
                        dep, packed_samples, reference, opts, True, None)
                else:
                    ref = measure.options(**pinned, max_retries=0).remote(dep, local_samples, reference, opts, False, host_cpus)
                waiting[ref] = (cfg, target)
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            cfg, target = waiting.pop(ready[0])
            try:
                results[cfg.trial_id][target] = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a lost worker/node is this trial's failure
                results[cfg.trial_id][target] = {"error": f"ray: {one_line(exc)}"}
            if len(results[cfg.trial_id]) == len(opts.targets):
                art = artifacts[cfg.compress_key]
                if not isinstance(art, dict):
                    try:
                        art = ray.get(art)
                    except Exception as exc:  # noqa: BLE001
                        art = {"error": f"ray: {one_line(exc)}", "compress_key": cfg.compress_key}
                    artifacts[cfg.compress_key] = {**art, "reused": True}  # later trials share it
                on_result(finish_trial(cfg, art, results[cfg.trial_id], started[cfg.trial_id]))
