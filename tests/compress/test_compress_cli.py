"""compress end to end on the tiny model: recipes, accuracy-aware INT8 and its per-class budget."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.compress.quantize import class_failures, float_layers, quantized_layers, revert_layers
from edgefg.compress.recipes import load_recipe
from edgefg.errors import UnsupportedError


def test_class_budget_accounts_for_class_size():
    drops = [
        {"class": "a", "images": 23, "drop_pts": 4.35, "drop_images": 1, "p_value": 0.5},  # one image: noise
        {"class": "b", "images": 20, "drop_pts": 25.0, "drop_images": 5, "p_value": 0.031},  # 5 lost, 0 gained
        {"class": "c", "images": 20, "drop_pts": 2.0, "drop_images": 0, "p_value": 0.01},
    ]
    assert [r["class"] for r in class_failures(drops, 3.0, 0.05)] == ["b"]
    assert [r["class"] for r in class_failures(drops, 3.0, 0.6)] == ["a", "b"]
    assert class_failures(drops, None, 0.05) == []


def test_recipe_files(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text('[[step]]\ntype = "prune"\nratio = 0.25\n[[step]]\ntype = "distil"\nmax_steps = 1\n[[step]]\ntype = "int8"\n')
    assert load_recipe(str(toml)) == ("r", [{"type": "prune", "ratio": 0.25}, {"type": "distil", "max_steps": 1}, {"type": "int8"}])
    yml = tmp_path / "r.yaml"
    yml.write_text("steps:\n  - {type: tokens, method: tome, keep: 0.5}\n")
    assert load_recipe(str(yml))[1] == [{"type": "tokens", "method": "tome", "keep": 0.5}]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[step]]\ntype = "int8"\n[[step]]\ntype = "prune"\n')
    with pytest.raises(UnsupportedError, match="last"):
        load_recipe(str(bad))
    bad.write_text('[[step]]\ntype = "prune"\nratoi = 0.3\n')
    with pytest.raises(UnsupportedError, match="ratoi"):
        load_recipe(str(bad))
    with pytest.raises(UnsupportedError, match="built-in recipes"):
        load_recipe("no-such-recipe")


def test_revert_layers_to_float(tiny_artifacts):
    import onnx
    import onnxruntime as ort

    ref = onnx.load(str(tiny_artifacts["fp32"] / "model.onnx"))
    q = onnx.load(str(tiny_artifacts["int8"] / "model.onnx"))
    layers = quantized_layers(q)
    assert layers
    one = revert_layers(q, ref, layers[:1])
    assert layers[0] in float_layers(one) and layers[0] not in float_layers(q)
    onnx.checker.check_model(one)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    err_q = np.abs(run(q) - run(ref)).mean()
    err_all = np.abs(run(revert_layers(q, ref, layers)) - run(ref)).mean()
    assert err_all < err_q


def test_unmeetable_class_budget_exits_1_with_report(tmp_path, tiny_model, image_folder):
    out = tmp_path / "art"
    # a class "fails" when it drops more than -1 pt (i.e. always) at level 1.01 (any p): cannot be met
    args = ["compress", str(tiny_model), "--data", str(image_folder), "--calib-size", "12", "--max-class-drop", "-1",
            "--class-alpha", "1.01", "--eval-backend", "onnxruntime", "--latency-iters", "3", "-o", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "budget not met" in res.output
    report = json.loads((out / "report.json").read_text())
    q = report["compression"][-1]
    assert report["passed"] is False and q["passed"] is False and q["classes_over_budget"]
    assert len(q["attempts"]) > 1 and q["float_layers_per_class"]  # it tried reverting layers
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()
    assert "NOT met" in (out / "report.md").read_text()
    # every step timed together in interleaved rounds (the one timing helper), median and spread
    assert all(r["latency_ms_p50"] > 0 and r["latency_ms_iqr"] >= 0 for r in report["steps"]) and "interleaved" in report["latency_timing"]
    assert all(r.get("worst_class_drop", 0) >= 0 for r in report["steps"]) and report["worst_class_drop"] >= 0


def test_prune_distil_int8_recipe(tmp_path, tiny_model, image_folder):
    from edgefg.runtime.engine.bundle import LoadedBundle

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\ntype = "prune"\nratio = 0.3\n[[step]]\ntype = "distil"\nmax_steps = 1\nbatch_size = 6\n[[step]]\ntype = "int8"\n')
    out = tmp_path / "art"
    res = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--calib-size", "12", "--latency-iters", "3", "--recipe", str(recipe), "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    steps = [r["step"] for r in report["steps"]]
    assert steps == ["fp32 (reference)", "prune 0.3", "distil", "int8"]
    ref, pruned = report["steps"][0], report["steps"][1]
    assert pruned["params"] < 0.8 * ref["params"] and pruned["macs"] < 0.8 * ref["macs"]
    assert [c["step"] for c in report["compression"]] == ["prune", "distil", "int8"]
    assert report["compression"][0]["importance"] == "taylor"  # data given: gradient-based importance
    prune_desc = report["compression"][0]  # one parameter count in the report: the table's
    assert (prune_desc["params_before"], prune_desc["params_after"]) == (ref["params"], pruned["params"])
    assert (prune_desc["macs_before"], prune_desc["macs_after"]) == (ref["macs"], pruned["macs"])
    assert report["compression"][1]["steps"] == 1 and report["compression"][1]["temperature"] == 4.0
    assert (out / "report.png").stat().st_size > 1000 and "report.png" in (out / "report.md").read_text()
    with LoadedBundle(out) as m:
        assert m.manifest.precision == "int8" and [c["step"] for c in m.manifest.compression] == ["prune", "distil", "int8"]
        assert m.scores(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 3)
    assert not (tmp_path / ".art.ckpt").exists()  # checkpoints are removed after success


def test_token_reduction_on_cnn_is_a_clear_error(tmp_path, tiny_model, image_folder):
    res = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--token-keep", "0.5", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "vit_" in res.output


def test_cli_flags_fold_into_the_recipe():
    from edgefg.compress.api import CompressOptions, plan_steps

    name, steps = plan_steps(CompressOptions(recipe="int8", prune=0.4, max_drop=0.5, max_class_drop=5, class_alpha=0.1, epochs=3, max_steps=7))
    assert name == "int8"
    assert steps == [
        {"type": "prune", "ratio": 0.4},
        {"type": "distil", "epochs": 3, "max_steps": 7},
        {"type": "int8", "max_drop": 0.5, "max_class_drop": 5, "class_alpha": 0.1, "class_gate": "evidence"},
    ]
    _, steps = plan_steps(CompressOptions(recipe="fp32", token_keep=0.5, token_method="tome", clca=True, epochs=2))
    assert steps == [{"type": "tokens", "keep": 0.5, "method": "tome", "clca": True, "epochs": 2}]
    with pytest.raises(UnsupportedError, match="int8 step"):
        plan_steps(CompressOptions(recipe="fp32", max_drop=0.5))
    with pytest.raises(UnsupportedError, match="token"):
        plan_steps(CompressOptions(recipe="fp32", clca=True))


def test_prune_rounds_compound_to_the_ratio_and_split_the_epochs():
    from edgefg.compress.api import CompressOptions, plan_steps

    _, steps = plan_steps(CompressOptions(recipe="int8", prune=0.2, prune_rounds=3, epochs=40, lr=1e-3))
    assert [s["type"] for s in steps] == ["prune", "distil"] * 3 + ["int8"]
    r = steps[0]["ratio"]
    assert all(s["ratio"] == r for s in steps[0:6:2]) and abs((1 - r) ** 3 - 0.8) < 1e-5  # 3 rounds keep 80 % of the channels
    assert [s["epochs"] for s in steps[1:6:2]] == [8, 8, 24] and all(s["lr"] == 1e-3 for s in steps[1:6:2])  # --epochs: the total
    _, steps = plan_steps(CompressOptions(recipe="fp32", prune=0.3, prune_rounds=2))
    assert [s.get("epochs") for s in steps] == [None, 1, None, 1]  # without --epochs: one per round
    with pytest.raises(UnsupportedError, match="needs --prune"):
        plan_steps(CompressOptions(recipe="fp32", prune_rounds=3))
    with pytest.raises(UnsupportedError, match="recipe without prune steps"):
        plan_steps(CompressOptions(recipe="prune-kd", prune=0.2, prune_rounds=3))
    with pytest.raises(UnsupportedError, match="at least 3 distillation epochs") as err:
        plan_steps(CompressOptions(recipe="fp32", prune=0.2, prune_rounds=3, epochs=2))
    assert "--epochs 3" in err.value.hint


def test_prune_rounds_through_the_cli(tmp_path, tiny_model, image_folder):
    out = tmp_path / "art"
    res = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--prune", "0.3", "--prune-rounds", "2",
                                   "--epochs", "2", "--max-steps", "1", "--train-batch", "6", "--latency-iters", "2", "--no-plot", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    names = [r["step"] for r in report["steps"]]
    assert names[0] == "fp32 (reference)" and names[2::2] == ["distil", "distil"]
    assert all(n.startswith("prune 0.163") for n in names[1::2])  # 1 - (1 - 0.163)² ≈ 0.3
    assert report["steps"][-1]["params"] < 0.85 * report["steps"][0]["params"]
    bad = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--prune", "0.3", "--prune-rounds", "0", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--prune-rounds" in bad.output


def test_without_val_data_the_report_says_accuracy_is_on_training_images(tmp_path, tiny_model, image_folder, caplog, monkeypatch):
    import logging

    from edgefg.compress import api
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.models.loader import load_model

    monkeypatch.setattr(api, "FALLBACK_VAL_SIZE", 10)  # the cap (1000 by default) on a small folder
    with caplog.at_level(logging.WARNING, logger="edgefg.compress.api"):
        res = compress(load_model(tiny_model), tmp_path / "a", CompressOptions(recipe="fp32", data=image_folder, latency_iters=2))
    report = json.loads((res.directory / "report.json").read_text())
    assert report["validation"]["held_out"] is False and report["validation"]["images"] == 10
    assert any("no --val-data" in r.message for r in caplog.records)


def test_attention_is_detected_in_onnx_inputs(tmp_path, tiny_model):
    """An ONNX model has no timm arch name: the graph decides NNCF's model type."""
    import timm
    import torch

    from edgefg.compress.api import has_attention
    from edgefg.converters.torch_to_onnx import export_onnx
    from edgefg.models.loader import load_model

    vit = timm.create_model("test_vit", num_classes=3, img_size=32, dynamic_img_size=False).eval()
    assert has_attention(export_onnx(vit, (32, 32), tmp_path / "vit.onnx"))
    cnn = load_model(tiny_model)
    size = tuple(cnn.preprocess.input_size)
    with torch.no_grad():
        assert not has_attention(export_onnx(cnn.module, size, tmp_path / "cnn.onnx"))
    # a linear head whose weight reaches MatMul through a Transpose is still a constant operand
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    nodes = [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
    onnx.save(helper.make_model(graph), tmp_path / "head.onnx")
    assert not has_attention(tmp_path / "head.onnx")


def test_input_downsampling_step(tmp_path, tiny_model, image_folder):
    """--input-size: a smaller input, distilled from the full-resolution model; the manifest, the
    exported graph and the report follow; the reference row stays at full resolution."""
    out = tmp_path / "small"
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "int8", "--input-size", "48",
                                 "--max-steps", "2", "--train-batch", "4", "--latency-iters", "2", "--no-plot", "-o", str(out)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocess"]["input_size"] == [48, 48] and manifest["inputs"][0]["shape"][2:] == [48, 48]
    assert manifest["preprocess"]["crop_pct"] == 0.875  # the crop covers the same part of the image
    assert manifest["source"]["data_config"]["input_size"] == [3, 48, 48]  # what timm would use at --img-size 48
    report = json.loads((out / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["fp32 (reference)", "input 48px + KD", "int8"]
    assert report["steps"][1]["macs"] < 0.7 * report["steps"][0]["macs"]
    resize = report["compression"][0]
    assert resize["input_size_before"] == [64, 64] and resize["steps"] == 2 and resize["teacher"].endswith("full resolution")
    import onnx

    dims = [d.dim_value for d in onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == [48, 48]


def test_input_size_a_vit_cannot_take_is_refused(tmp_path, image_folder):
    """timm's test_vit interpolates its position embeddings (dynamic_img_size) but needs a multiple of its 16-px patch."""
    from tests.conftest import write_hub_folder

    vit = write_hub_folder(tmp_path / "vit", arch="test_vit")
    r = CliRunner().invoke(cli, ["compress", str(vit), "--data", str(image_folder), "--recipe", "fp32", "--input-size", "50", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "cannot take a 50×50 input" in r.output and "--input-size" in r.output
    assert not (tmp_path / "o").exists()


def test_resize_step_must_come_first(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text('[[step]]\ntype = "prune"\nratio = 0.2\n[[step]]\ntype = "resize"\nsize = 160\n')
    with pytest.raises(UnsupportedError, match="first step"):
        load_recipe(str(bad))
    bad.write_text('[[step]]\ntype = "resize"\nsize = 8\n')
    with pytest.raises(UnsupportedError, match="16..4096"):
        load_recipe(str(bad))


def test_module_names_of_onnx_nodes(tiny_artifacts, tiny_model):
    """Reports name a layer left in float by the PyTorch module it came from (dynamo exporter metadata)."""
    import onnx

    from edgefg.compress.quantize import module_names
    from edgefg.models.loader import load_model

    ref = onnx.load(str(tiny_artifacts["fp32"] / "model.onnx"))
    layers = quantized_layers(onnx.load(str(tiny_artifacts["int8"] / "model.onnx")))
    named = module_names(ref, layers)
    modules = dict(load_model(tiny_model).module.named_modules())
    assert set(named) == set(layers) and all(named[n] in modules and named[n] for n in layers), named
    assert "conv_stem" in named.values() and "classifier" in named.values()  # not the BatchNorm folded into it
    conv = next(n for n in ref.graph.node if n.name == layers[0])
    conv.input[1] = "w0"  # an exporter without parameter names and without metadata: the node keeps only its ONNX name
    ref.graph.initializer.add().name = "w0"
    assert module_names(ref, layers)[layers[0]] in modules  # still found through the exporter's scopes (the folded BatchNorm's)
    del conv.metadata_props[:]
    assert layers[0] not in module_names(ref, layers)


def test_train_precision_through_the_cli(tmp_path, tiny_model, image_folder, monkeypatch):
    """--train-precision bf16 on a CPU without native bf16 is refused before any work; where it has it, the
    distillation runs under bf16 autocast and the report says so."""
    from edgefg.compress import train as train_mod

    args = ["compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32", "--prune", "0.3", "--epochs", "1", "--max-steps", "1",
            "--train-batch", "6", "--latency-iters", "2", "--no-plot", "--train-precision", "bf16"]
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    bad = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "without native bfloat16" in bad.output and "--train-precision fp32" in bad.output
    assert not (tmp_path / "bad").exists()
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: True)
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "art")])
    assert res.exit_code == 0, res.output
    distil = [c for c in json.loads((tmp_path / "art" / "report.json").read_text())["compression"] if c["step"] == "distil"]
    assert [c["precision"] for c in distil] == ["bf16 autocast on cpu"]
