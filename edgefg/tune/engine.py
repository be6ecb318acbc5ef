"""Engines run a sweep's pending trials and hand each finished trial to ``on_result``.

``inprocess`` (the default: no Ray import) runs them one after another in this process; ``ray``
(:mod:`edgefg.distributed.engine`) runs the same work functions as Ray tasks. A registry, so a
new engine is one line.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgefg.lazy import resolve
from edgefg.tune.options import TuneOptions
from edgefg.tune.space import TrialConfig
from edgefg.tune.work import build_artifact, deploy_bundle, finish_trial, measure_bundle


@dataclass
class Sweep:
    """What every trial shares: the options, the validation samples and the reference's scores on them."""

    opts: TuneOptions
    samples: Sequence  # edgefg.calibration.dataset.Sample
    reference: Any  # edgefg.validate.evaluate.Scored
    reference_artifact: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def run(self, sweep: Sweep, pending: list[TrialConfig], on_result: Callable[[dict[str, Any]], None]) -> None: ...

    def describe(self) -> str: ...


class InProcessEngine:
    name = "inprocess"

    def describe(self) -> str:
        return "in-process (sequential)"

    def run(self, sweep: Sweep, pending: list[TrialConfig], on_result: Callable[[dict[str, Any]], None]) -> None:
        artifacts: dict[str, dict[str, Any]] = {sweep.reference_artifact["compress_key"]: sweep.reference_artifact}
        for cfg in pending:
            started = time.time()
            art = artifacts.get(cfg.compress_key)
            art = {**art, "reused": True} if art else build_artifact(sweep.opts, cfg)
            artifacts.setdefault(cfg.compress_key, art)
            per_target = {}
            for target in sweep.opts.targets:
                dep = deploy_bundle(sweep.opts, cfg, art, target)
                per_target[target] = dep if dep.get("error") else measure_bundle(dep["bundle"], sweep.samples, sweep.reference, sweep.opts)
            on_result(finish_trial(cfg, art, per_target, started))


ENGINES: dict[str, str] = {
    "inprocess": "edgefg.tune.engine:InProcessEngine",
    "ray": "edgefg.distributed.engine:RayEngine",
}


def make_engine(ray: str | None) -> Engine:
    """No ``--ray``: in-process. ``--ray local`` or ``--ray ADDRESS``: the Ray engine."""
    if not ray:
        return InProcessEngine()
    return resolve(ENGINES["ray"])(ray)
