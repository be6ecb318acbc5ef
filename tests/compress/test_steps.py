"""The compress-step registry: every step holds to one contract, and a new step is one registration."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgefg.compress import steps as registry
from edgefg.compress.recipes import BUILTIN, load_recipe, validate_steps
from edgefg.errors import UnsupportedError


@pytest.mark.parametrize("name", sorted(registry.STEPS))
def test_every_step_holds_to_the_contract(name):
    spec = registry.STEPS[name]
    assert spec.name == name and spec.summary and spec.position in ("any", "first", "last")
    example = {"type": name, **({"size": 192} if name == "resize" else {})}
    assert validate_steps([example])[0]["type"] == name  # its own defaults validate
    assert isinstance(spec.label(example), str) and spec.label(example)
    with pytest.raises(UnsupportedError, match="unknown key"):
        validate_steps([{**example, "no_such_key": 1}])
    if spec.trains(example):  # --epochs/--lr/--max-steps apply only where a step trains: it must accept them
        assert {"epochs", "lr", "max_steps"} <= set(spec.keys)
    assert spec.torch == (name != "int8")  # int8 works on the exported ONNX, every other step on the PyTorch model


def test_builtin_recipes_use_registered_steps_only():
    for name in BUILTIN:
        for step in load_recipe(name)[1]:
            assert step["type"] in registry.STEPS


def test_bad_step_values_are_refused_before_any_work():
    with pytest.raises(UnsupportedError, match=r"prune ratio 1.5 is outside \(0, 1\)"):
        validate_steps([{"type": "prune", "ratio": 1.5}])
    with pytest.raises(UnsupportedError, match="integer 'size'"):
        validate_steps([{"type": "resize", "size": 8}])
    with pytest.raises(UnsupportedError, match="must be the last step"):
        validate_steps([{"type": "int8"}, {"type": "distil"}])


def test_a_new_step_is_one_registration(tmp_path, tiny_model, image_folder):
    """Registering a step makes recipes accept it and compress run it, label it and report it."""
    from edgefg.cli import cli

    seen = []

    def apply(ctx, step):
        seen.append((ctx.index, step["scale"]))
        return registry.StepOutcome(ctx.module, {"method": "identity for the test", "scale": step["scale"]})

    registry.register(registry.StepSpec("identity", "does nothing (test)", {"scale": 1.0}, label=lambda s: f"identity x{s.get('scale', 1.0):g}", apply=apply))
    try:
        recipe = tmp_path / "r.toml"
        recipe.write_text('[[step]]\ntype = "identity"\nscale = 2.0\n')
        out = tmp_path / "art"
        res = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", str(recipe), "--latency-iters", "2",
                                       "--no-plot", "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert seen == [(0, 2.0)]
        report = json.loads((out / "report.json").read_text())
        assert [r["step"] for r in report["steps"]] == ["fp32 (reference)", "identity x2"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["compression"][0]["step"] == "identity"
    finally:
        del registry.STEPS["identity"]
