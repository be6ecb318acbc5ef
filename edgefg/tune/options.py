"""The options of a sweep (one dataclass, shared by the CLI, the API and the Ray tasks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgefg.models.checkpoint import CheckpointSettings

OBJECTIVES = ("latency", "size", "accuracy")


@dataclass
class Budget:
    """Per-target limits; None = no limit. Drops are percentage points vs the FP32 reference.

    A class is over ``max_class_drop`` only when its drop is also significant (``class_gate``
    "evidence": paired sign test, Holm-corrected over the classes, p < ``class_alpha``); "points"
    compares raw points. ``min_agreement``: top-1 agreement with FP32 on ``--agreement-data`` frames."""

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_drop: float | None = None
    max_class_drop: float | None = None
    min_agreement: float | None = None
    class_alpha: float = 0.05
    class_gate: str = "evidence"


@dataclass
class TuneOptions:
    model: Path
    data: Path  # training/calibration images (ImageFolder)
    val_data: Path  # held-out labelled images: per-class validation against the FP32 reference
    targets: list[str]
    out: Path
    space: str = "builtin"  # builtin | a .toml file
    objective: str = "latency"  # latency | size | accuracy: what "best within budget" means
    agreement_data: Path | None = None  # unlabelled frames (any folder): every trial's top-1 agreement with FP32 on them
    agreement_size: int | None = 2000  # frames read (a seeded random subset of a larger folder); None: all
    early_stop: bool = True  # stop a pruning trial's distillation when it cannot reach the loosest target's max_drop
    early_stop_drop: float | None = None  # set by tune(): that loosest max_drop (None: no target has one)
    budget: Budget = field(default_factory=Budget)
    trials: int | None = None  # None: the whole space
    ray: str | None = None  # None: in-process; "local"; or a cluster ADDRESS
    resume: bool = False
    seed: int = 0
    val_size: int | None = None  # validate on a stratified subset of this many images (None: all)
    compress_val_size: int | None = 200  # images compress's own before/after report scores
    train_max_steps: int | None = None  # cap on optimizer steps per training step (tests, quick sweeps)
    bench_rounds: int = 3
    bench_iters: int = 20
    batch_size: int = 8
    arch: str | None = None
    num_classes: int | None = None
    labels: Path | None = None
    checkpoint: CheckpointSettings | None = None  # what a bare checkpoint MODEL does not say (config, preprocessing, pad_type)
