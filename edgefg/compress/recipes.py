"""Compression recipes: an ordered list of steps, built in by name or read from a TOML/YAML file.

A recipe file lists steps in order::

    # recipe.toml                       # recipe.yaml
    [[step]]                            steps:
    type = "prune"                        - {type: prune, ratio: 0.3}
    ratio = 0.3                           - {type: distil, epochs: 2, lr: 0.0005}
    [[step]]                              - {type: int8, max_drop: 0.5, max_class_drop: 10}
    type = "distil"
    epochs = 2
    [[step]]
    type = "int8"
    max_drop = 0.5

Torch steps (prune, distil, finetune, tokens, ila) run on the PyTorch model in order; ``int8`` runs
on the exported ONNX and must come last. Its keys: ``max_drop``/``max_class_drop``/``class_alpha``/``class_gate``
(budget on labelled images), ``agreement_data``/``min_agreement``/``agreement_size`` (accuracy control
by top-1 agreement with the FP32 model on unlabelled images), ``max_reverts`` (most layers reverted to
float), ``bias_correction`` (fast | full | off), ``subset_size`` (calibration images), ``smooth_quant``
(alpha), ``ignored`` (node names kept in float).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefg.compress.steps import ILA_DEFAULT_AT, STEPS, step_keys, torch_steps
from edgefg.errors import InputPathError, MissingDependencyError, UnsupportedError

STEP_KEYS: dict[str, set[str]] = step_keys()  # each step's recipe keys, from the registry (edgefg/compress/steps.py)
TORCH_STEPS = torch_steps()

BUILTIN: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "fp32": ("no compression (the reference every later step is compared with)", []),
    "int8": ("NNCF INT8 post-training quantization", [{"type": "int8"}]),
    "int8-accuracy": (
        "INT8 with NNCF accuracy control (≤ 0.5 pt top-1) and a per-class budget (≤ 10 pt, significant drops only)",
        [{"type": "int8", "max_drop": 0.5, "max_class_drop": 10.0}],
    ),
    "prune-kd": ("30% structured pruning + 1 epoch of distillation from the unpruned model", [{"type": "prune", "ratio": 0.3}, {"type": "distil", "epochs": 1}]),
    "prune-kd-int8": (
        "30% structured pruning + 1 epoch of distillation + INT8",
        [{"type": "prune", "ratio": 0.3}, {"type": "distil", "epochs": 1}, {"type": "int8"}],
    ),
    "prune-iterative": (
        "iterative pruning: 3 × (12% structured pruning + BatchNorm re-calibration + 1 epoch of distillation from the unpruned model) ≈ 32% of channels",
        [{"type": "prune", "ratio": 0.12}, {"type": "distil", "epochs": 1}] * 3,
    ),
    "evit": ("EViT token reduction, keep 0.7 at three blocks (ViTs)", [{"type": "tokens", "method": "evit", "keep": 0.7}]),
    "tome": ("ToMe token merging, keep 0.7 at three blocks (ViTs)", [{"type": "tokens", "method": "tome", "keep": 0.7}]),
    "ila": ("ILA down-sampling adapters after blocks {} and {}, 1 epoch (ViTs)".format(*ILA_DEFAULT_AT), [{"type": "ila", "at": list(ILA_DEFAULT_AT), "epochs": 1}]),
}

# the steps the plain recipes had before recipes existed, for the report heading
RECIPES = {name: desc for name, (desc, _) in BUILTIN.items()}


def load_recipe(spec: str) -> tuple[str, list[dict[str, Any]]]:
    """A built-in name or a .toml/.yaml/.yml file → (name, validated steps)."""
    if spec in BUILTIN:
        return spec, [dict(s) for s in BUILTIN[spec][1]]
    path = Path(spec)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise UnsupportedError(f"unknown recipe '{spec}'", f"built-in recipes: {', '.join(BUILTIN)}; or pass a .toml/.yaml recipe file")
    if not path.is_file():
        raise InputPathError(f"recipe file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            try:
                import yaml
            except ModuleNotFoundError:
                raise MissingDependencyError.for_module("pyyaml", "compress") from None
            data = yaml.safe_load(text) or {}
    except MissingDependencyError:
        raise
    except Exception as exc:  # TOMLDecodeError / YAMLError
        raise UnsupportedError(f"recipe file '{path}' is not valid: {str(exc).splitlines()[0][:200]}") from None
    steps = data.get("step", data.get("steps")) if isinstance(data, dict) else None
    if not isinstance(steps, list):
        raise UnsupportedError(f"recipe file '{path}' has no step list", "write [[step]] tables (TOML) or a 'steps:' list (YAML)")
    return path.stem, validate_steps(steps, str(path))


def validate_steps(steps: list[Any], where: str = "recipe") -> list[dict[str, Any]]:
    STEP_KEYS = step_keys()  # read at call time: a step registered after import counts too
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "type" not in step:
            raise UnsupportedError(f"{where}: step {i + 1} has no 'type'", f"step types: {', '.join(STEP_KEYS)}")
        kind = step["type"]
        if kind not in STEP_KEYS:
            raise UnsupportedError(f"{where}: unknown step type '{kind}'", f"step types: {', '.join(STEP_KEYS)}")
        unknown = set(step) - STEP_KEYS[kind] - {"type"}
        if unknown:
            raise UnsupportedError(f"{where}: step '{kind}' has unknown key(s) {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(STEP_KEYS[kind]))}")
        out.append(dict(step))
    kinds = [s["type"] for s in out]
    for kind in dict.fromkeys(kinds):
        spec = STEPS[kind]
        if spec.position == "last" and kinds.index(kind) != len(kinds) - 1:
            raise UnsupportedError(f"{where}: the {kind} step must be the last step")
        if spec.position == "first" and (kinds.index(kind) != 0 or kinds.count(kind) > 1):
            what = "resize (input down-sampling)" if kind == "resize" else kind
            raise UnsupportedError(f"{where}: the {what} step must be the first step, once")
    for s in out:
        check = STEPS[s["type"]].check
        if check is not None:
            check(s, where)
    if "ila" in kinds and "tokens" in kinds:
        raise UnsupportedError(f"{where}: ILA adapters and token reduction cannot be combined (adapters need the full token grid)")
    return out
