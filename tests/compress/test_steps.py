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


def test_a_new_step_brings_its_own_flag(tmp_path, tiny_model, image_folder):
    """A step declares its `edgefg compress` option in its StepSpec, and nothing else is edited: the flag is on
    `compress --help`, plan_steps plans the step from it, and its value reaches the step's config; unregistered,
    the flag is gone."""
    import click

    from edgefg.cli import cli
    from edgefg.compress.api import CompressOptions, plan_steps

    seen = []

    def apply(ctx, step):
        seen.append(dict(step))
        return registry.StepOutcome(ctx.module, {"method": "identity for the test", "level": step["level"]})

    registry.register(registry.StepSpec(
        "levelled", "does nothing, at a level (test)", {"level": 1}, label=lambda s: f"levelled {s.get('level', 1)}", apply=apply,
        options=(registry.option("--levelled-level", type=click.IntRange(1, 9), key="level", help="Level of the made-up test step."),)))
    try:
        shown = CliRunner().invoke(cli, ["compress", "--help"], terminal_width=200).output
        assert "--levelled-level" in shown and "Level of the made-up test step." in shown
        # planned from the flag (after the other PyTorch steps, before int8), on the recipe's own step when it has one, not at all without it
        assert plan_steps(CompressOptions(recipe="int8", prune=0.3, flags={"levelled_level": 3}))[1] == [
            {"type": "prune", "ratio": 0.3}, {"type": "distil", "epochs": 1}, {"type": "levelled", "level": 3}, {"type": "int8"}]
        recipe = tmp_path / "r.toml"
        recipe.write_text('[[step]]\ntype = "levelled"\nlevel = 2\n[[step]]\ntype = "int8"\n')
        assert plan_steps(CompressOptions(recipe=str(recipe), flags={"levelled_level": 5}))[1] == [{"type": "levelled", "level": 5}, {"type": "int8"}]
        assert plan_steps(CompressOptions(recipe="fp32"))[1] == []
        # through the command line: the value reaches the step's config, and the report
        out = tmp_path / "art"
        res = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--levelled-level", "4",
                                       "--latency-iters", "2", "--no-plot", "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert seen == [{"type": "levelled", "level": 4}]
        report = json.loads((out / "report.json").read_text())
        assert report["recipe_steps"] == [{"type": "levelled", "level": 4}]
        assert [r["step"] for r in report["steps"]] == ["fp32 (reference)", "levelled 4"]
        bad = CliRunner().invoke(cli, ["compress", str(tiny_model), "--levelled-level", "0", "-o", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and "--levelled-level" in bad.output  # click checks the declared type
    finally:
        registry.unregister("levelled")
    assert "--levelled-level" not in CliRunner().invoke(cli, ["compress", "--help"], terminal_width=200).output
    assert CliRunner().invoke(cli, ["compress", str(tiny_model), "--levelled-level", "4", "-o", str(tmp_path / "x")]).exit_code == 2


def test_every_step_flag_is_declared_once_by_its_step():
    """The compress command's step flags are the registry's: each on one step, each on the command once."""
    from edgefg.cli import cli

    declared = [o.flag for s in registry.STEPS.values() for o in s.options]
    assert len(declared) == len(set(declared))
    assert {"--prune", "--prune-rounds", "--input-size", "--token-keep", "--adapters", "--max-drop", "--ignore"} <= set(declared)
    on_command = [o for p in cli.commands["compress"].params for o in p.opts]
    assert len(on_command) == len(set(on_command)) and set(declared) <= set(on_command)
    with pytest.raises(ValueError, match="--prune"):
        registry.register(registry.StepSpec("twice", "test", {}, label=lambda s: "twice", options=(registry.option("--prune", type=float),)))
    assert "twice" not in registry.STEPS
    registry.register(registry.StepSpec("seeded", "test", {}, label=lambda s: "seeded", options=(registry.option("--seed", type=int),)))
    try:
        with pytest.raises(ValueError, match="--seed, an option of the command itself"):
            _ = cli.commands["compress"].params  # reading the params builds the step options
    finally:
        registry.unregister("seeded")
    assert "--prune" in {o for p in cli.commands["compress"].params for o in p.opts}


def test_the_compress_command_loads_the_registry_only_when_used():
    """`edgefg run` imports the CLI: the compress command's step options must not load the step registry then."""
    import subprocess
    import sys

    code = ("import sys; from edgefg.cli import cli; assert 'edgefg.compress.steps' not in sys.modules; "
            "assert '--prune' in {o for p in cli.commands['compress'].params for o in p.opts}; assert 'edgefg.compress.steps' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
