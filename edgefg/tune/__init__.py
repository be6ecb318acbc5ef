"""``edgefg tune``: search compression × deployment per target under its budget.

A sweep enumerates :class:`~edgefg.tune.space.TrialConfig` points of a search space, builds one
compressed artifact per distinct compression configuration, deploys it for every target,
validates each bundle per class against the FP32 reference and benches it, then picks the most
accurate trial within each target's budget. Trials run in-process by default; ``--ray`` runs the
same functions as Ray tasks (:mod:`edgefg.distributed`).
"""
from edgefg.tune.space import SearchSpace, TrialConfig, builtin_space, load_space

__all__ = ["SearchSpace", "TrialConfig", "builtin_space", "load_space"]
