"""Agreement-driven INT8 (--agreement-data/--min-agreement), max_reverts and the quantizer's stronger
options (bias correction, calibration size, SmoothQuant on a CNN head), on tiny models at 64 px."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from edgefg.compress.agreement import KL_TIE_WEIGHT, AgreementMetric, agreement_stats, load_unlabelled, scan_unlabelled
from edgefg.compress.recipes import load_recipe, validate_steps
from edgefg.errors import DataError, InputPathError, UnsupportedError
from tests.conftest import make_image, write_hub_folder

MIN_AGREEMENT = 0.9


# ------------------------------------------------------------------------------------------------
# fixtures: a tiny CNN whose INT8 version flips predictions, and unlabelled frames


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """60 unlabelled images in nested folders (as camera dumps are), plus a non-image file."""
    root = tmp_path_factory.mktemp("frames") / "cam"
    rng = np.random.default_rng(7)
    for i in range(60):
        folder = root / f"day{i % 2}" / "hour3"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"f{i:03d}.jpg"), make_image(rng, i % 3))
    (root / "day0" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def sensitive_model(tmp_path_factory, image_folder) -> Path:
    """test_efficientnet whose head reads the small image-to-image variation of its pooled features
    (a random backbone maps every image to nearly the same features): its predictions vary with
    the image, and INT8 noise flips a fifth of them — the situation agreement control is for."""
    import torch
    from safetensors.torch import save_file

    from edgefg.models.loader import load_model
    from edgefg.runtime.engine.preprocess import preprocess

    root = write_hub_folder(tmp_path_factory.mktemp("models") / "sensitive")
    net = load_model(root).module.eval()
    rng = np.random.default_rng(1)
    spec = load_model(root).preprocess
    x = torch.from_numpy(np.stack([preprocess(make_image(rng, i % 3), spec) for i in range(90)]))
    with torch.no_grad():
        f = net.forward_head(net.forward_features(x), pre_logits=True).double()
        mu = f.mean(0)
        w = torch.from_numpy(np.random.default_rng(2).standard_normal((3, f.shape[1])))
        k = 1.0 / ((f - mu) @ w.T).std()
        net.classifier.weight.copy_((k * w).float())
        net.classifier.bias.copy_((-k * mu @ w.T).float())
    save_file({n: v.contiguous() for n, v in net.state_dict().items()}, str(root / "model.safetensors"))
    return root


def _compress(model: Path, out: Path, **kw):
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.models.loader import load_model

    opts = dict(recipe="int8", calib_size=12, latency_iters=2, plot=False, force=True, check_preprocess=False)
    opts.update(kw)
    return compress(load_model(model), out, CompressOptions(**opts))


def _agreement_on(artifact: Path, reference: Path, frames: Path) -> float:
    """Independent check, straight through OpenVINO (the report's engine; ONNX Runtime's integer
    kernels round differently and this model is built to be fragile): top-1 agreement on the frames."""
    import openvino as ov

    from edgefg.manifest import load_manifest

    x = load_unlabelled(frames, load_manifest(artifact).preprocess, None).x
    core = ov.Core()

    def run(p: Path) -> np.ndarray:
        c = core.compile_model(str(p / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([c(x[i : i + 1])[0] for i in range(len(x))])

    return agreement_stats(run(artifact), run(reference))["agreement"]


# ------------------------------------------------------------------------------------------------
# the unlabelled folder


def test_scan_is_recursive_and_needs_no_labels(frames, caplog):
    with caplog.at_level(logging.WARNING, logger="edgefg.compress.agreement"):
        images, other = scan_unlabelled(frames)
    assert len(images) == 60 and other == 1 and all(p.suffix == ".jpg" for p in images)
    assert any("non-image" in r.message for r in caplog.records)


def test_bad_agreement_folders_are_clear_errors(tmp_path):
    with pytest.raises(InputPathError, match="does not exist"):
        scan_unlabelled(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InputPathError, match="not a folder"):
        scan_unlabelled(tmp_path / "file.jpg")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="contains no images"):
        scan_unlabelled(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    (tmp_path / "docs" / ".hidden.jpg").write_bytes(b"x")  # hidden entries are not images of the user's
    with pytest.raises(DataError, match=r"no images \(1 other file"):
        scan_unlabelled(tmp_path / "docs")


def test_corrupt_images_are_skipped_with_a_warning(tmp_path, tiny_model, caplog):
    from edgefg.models.loader import load_model

    spec = load_model(tiny_model).preprocess
    rng = np.random.default_rng(0)
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"ok{i}.png"), make_image(rng, i))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING):
        got = load_unlabelled(tmp_path, spec)
    assert got.x.shape == (5, 3, 64, 64) and [p.name for p in got.skipped] == ["broken.jpg"] and got.found == 6
    assert any("broken.jpg" in r.message for r in caplog.records)
    assert len(load_unlabelled(tmp_path, spec, size=3).x) <= 3  # a seeded subset of a large folder
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="could be read"):
        load_unlabelled(only_bad, spec)


# ------------------------------------------------------------------------------------------------
# the metric NNCF's accuracy control sees


def test_agreement_metric_counts_flips_and_breaks_ties_by_kl():
    ref = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    models = {
        "same": ref.copy(),
        "one_flip": np.array([[0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]]),
        "same_top1_but_flatter": np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]]),
    }
    calls: list[str] = []

    def logits(model, x):
        calls.append(model)
        return models[model][x]

    metric = AgreementMetric(logits, "same", np.arange(4))
    calls.clear()
    assert metric("same", range(4)) == (1.0, [1.0] * 4)
    assert calls == []  # FP32 predictions are computed once: NNCF's call on the FP32 model is answered from them
    flip, per_image = metric("one_flip", range(4))
    assert 0.75 - KL_TIE_WEIGHT / 4 <= flip < 0.75 and per_image[0] < 0 < per_image[1] - 0.99
    flat, _ = metric("same_top1_but_flatter", range(4))
    assert 1.0 - KL_TIE_WEIGHT / 4 <= flat < 1.0  # all agree, but worse than the FP32 model itself
    assert flat > flip  # the KL tie-break never outweighs one flipped image
    assert metric("one_flip", [1, 2]) == (1.0, [1.0, 1.0])  # a subset: indices into the images
    assert metric.full_runs == [1.0, 0.75, 1.0]


def test_agreement_threshold_is_exact_in_images():
    """max_drop for NNCF: met by k = ceil(F·n) agreeing images whatever the KL term, never by k − 1;
    F = 1 stays reachable (the KL term alone must not force every layer back to float)."""
    n = 1999
    metric = AgreementMetric(lambda m, x: np.zeros((len(x), 3)), "fp32", np.arange(n))
    for f in (0.99, 0.998, 1.0, 0.5):
        need = int(np.ceil(f * n))
        drop = metric.max_drop(f)
        worst_with_need = need / n - KL_TIE_WEIGHT / n  # k agree, the largest KL penalty
        best_with_one_less = (need - 1) / n  # k − 1 agree, no KL penalty
        assert 1.0 - worst_with_need <= drop < 1.0 - best_with_one_less, f


# ------------------------------------------------------------------------------------------------
# options: recipe keys and flags


def test_int8_keys_are_validated(tmp_path):
    ok = validate_steps([{"type": "int8", "agreement_data": "frames", "min_agreement": 0.98, "agreement_size": 500, "max_reverts": 4,
                          "bias_correction": "full", "subset_size": 64, "smooth_quant": 0.5}])
    assert ok[0]["min_agreement"] == 0.98
    bad = [
        ({"min_agreement": 0, "agreement_data": "f"}, "min_agreement"),
        ({"min_agreement": 1.5, "agreement_data": "f"}, "min_agreement"),
        ({"min_agreement": 0.9}, "needs 'agreement_data'"),
        ({"agreement_data": 3}, "folder path"),
        ({"max_reverts": 0}, "max_reverts"),
        ({"max_reverts": 2.5}, "max_reverts"),
        ({"bias_correction": "slow"}, "fast, full, off"),
        ({"subset_size": "all"}, "subset_size"),
        ({"max_drop": -1}, "max_drop"),
    ]
    for keys, msg in bad:
        with pytest.raises(UnsupportedError, match=msg):
            validate_steps([{"type": "int8", **keys}])
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\ntype = "int8"\nagreement_data = "frames"\nmin_agreement = 1.2\n')
    with pytest.raises(UnsupportedError, match=r"min_agreement' must be a fraction in \(0, 1\]"):
        load_recipe(str(recipe))


def test_flags_fold_into_the_int8_step():
    from edgefg.compress.api import CompressOptions, plan_steps

    _, steps = plan_steps(CompressOptions(agreement_data=Path("f"), min_agreement=0.97, max_reverts=3, bias_correction="off"))
    assert steps == [{"type": "int8", "agreement_data": "f", "min_agreement": 0.97, "max_reverts": 3, "bias_correction": "off"}]
    with pytest.raises(UnsupportedError, match="--agreement-data need"):
        plan_steps(CompressOptions(recipe="fp32", agreement_data=Path("f")))


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_min_agreement_out_of_range_is_refused(tmp_path, tiny_model, image_folder, frames, value):
    r = CliRunner().invoke(cli, ["compress", str(tiny_model), "--data", str(image_folder), "--agreement-data", str(frames),
                                 "--min-agreement", value, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--min-agreement" in r.output and not (tmp_path / "o").exists()


def test_bad_agreement_data_on_the_command_line(tmp_path, tiny_model, image_folder):
    base = ["compress", str(tiny_model), "--data", str(image_folder), "-o", str(tmp_path / "o"), "--agreement-data"]
    r = CliRunner().invoke(cli, base + [str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, base + [str(tmp_path / "empty")])
    assert r.exit_code == 2 and "contains no images" in r.output
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "readme.md").write_text("#")
    r = CliRunner().invoke(cli, base + [str(tmp_path / "txt")])
    assert r.exit_code == 2 and "no images (1 other file" in r.output
    (tmp_path / "corrupt").mkdir()
    for i in range(3):
        (tmp_path / "corrupt" / f"{i}.jpg").write_bytes(b"\x00" * 20)
    r = CliRunner().invoke(cli, base + [str(tmp_path / "corrupt"), "--latency-iters", "2", "--no-plot", "--no-check-preprocess"])
    assert r.exit_code == 2 and "could be read" in r.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# accuracy control by agreement, end to end


def test_agreement_not_labels_decides_the_reverts(tmp_path, sensitive_model, image_folder, frames):
    """The labelled budget (18 images, ≤ 50 pt) is met by plain INT8, so label-driven control keeps every
    quantizer; INT8 flips more than 10 % of the unlabelled frames' predictions, so agreement-driven
    control (same labelled data passed too) must revert layers until ≥ 0.9 of them agree."""
    ref = _compress(sensitive_model, tmp_path / "fp32", recipe="fp32", data=image_folder)
    plain = _compress(sensitive_model, tmp_path / "plain", data=image_folder)
    start = _agreement_on(plain.directory, ref.directory, frames)
    assert start < MIN_AGREEMENT, "precondition: plain INT8 must disagree on the frames, or this test proves nothing"

    labels = _compress(sensitive_model, tmp_path / "labels", data=image_folder, val_data=image_folder, max_drop=50.0)
    q = labels.report["compression"][-1]
    assert q["method"] == "int8-ptq-accuracy-control" and q["reverted_by_nncf"] == [] and q["passed"]

    agree = _compress(sensitive_model, tmp_path / "agree", data=image_folder, val_data=image_folder, max_drop=50.0,
                      agreement_data=frames, min_agreement=MIN_AGREEMENT)
    q = agree.report["compression"][-1]
    assert q["method"] == "int8-ptq-agreement-control" and q["passed"] and agree.passed
    assert q["reverted_by_nncf"], "agreement control reverted nothing"
    assert set(q["reverted_by_nncf"]) <= set(q["float_layers_nncf"]) and q["float_layers"] == q["float_layers_nncf"]
    assert q["plain_int8_agreement_with_fp32"] < MIN_AGREEMENT <= q["agreement_with_fp32"]
    assert q["agreement_images"] == 60 and q["agreement_ignored_files"] == 1 and q["validations"] >= 3
    assert q["top1_drop"] is not None and q["budget"]["max_drop"] == 50.0  # the labelled gate still ran
    assert _agreement_on(agree.directory, ref.directory, frames) >= MIN_AGREEMENT
    # what the control bought: NNCF's starting model is the plain INT8 artifact (same calibration), scored on the same labels
    assert q["plain_int8_top1"] == pytest.approx(plain.report["steps"][-1]["top1"])
    assert q["plain_int8_top1_drop"] == pytest.approx(100 * (agree.report["steps"][0]["top1"] - q["plain_int8_top1"]))
    # each reverted node is named by the PyTorch module it came from
    from edgefg.models.loader import load_model

    modules = dict(load_model(sensitive_model).module.named_modules())
    named = q["float_layer_modules"]
    assert set(q["reverted_by_nncf"]) <= set(named) and all(named[n] in modules for n in named), named
    report_md = (agree.directory / "report.md").read_text()
    assert f"{q['reverted_by_nncf'][0]} ({named[q['reverted_by_nncf'][0]]})" in report_md and "Plain INT8 (NNCF's starting point" in report_md
    assert "agreement with FP32 ≥ 0.9 on 60 unlabelled images" in report_md and q["reverted_by_nncf"][0] in report_md
    assert "int8 (agreement-aware)" in report_md


def test_max_reverts_limits_nncf_and_fails_honestly(tmp_path, sensitive_model, image_folder, frames):
    """Agreement 1.0 needs several layers back in float; one revert is not enough: exit 1, report written."""
    out = tmp_path / "one"
    r = CliRunner().invoke(cli, ["compress", str(sensitive_model), "--data", str(image_folder), "--calib-size", "12", "--agreement-data", str(frames),
                                 "--min-agreement", "1", "--max-reverts", "1", "--latency-iters", "2", "--no-plot", "--no-check-preprocess", "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert "agreement with FP32" in r.output and "min 1" in r.output
    q = json.loads((out / "report.json").read_text())["compression"][-1]
    assert q["budget"]["max_reverts"] == 1 and not q["passed"] and q["agreement_with_fp32"] < 1.0
    assert q["validations"] <= 4  # FP32 (from the cache) + mode probe + plain INT8 + one revert, no more iterations
    assert len(q["reverted_by_nncf"]) >= 1  # it did revert (how many layers one NNCF iteration takes is NNCF's call)
    # Without a limit NNCF goes on until the budget holds. How many layers that takes depends on the CPU's
    # INT8 kernels (one on a Xeon with AMX, more on an EPYC): the contract is the outcome, not the count.
    unlimited = _compress(sensitive_model, tmp_path / "all", data=image_folder, agreement_data=frames, min_agreement=MIN_AGREEMENT)
    u = unlimited.report["compression"][-1]
    assert u["passed"] and unlimited.passed and u["agreement_with_fp32"] >= MIN_AGREEMENT
    assert u["budget"]["max_reverts"] is None
    if u["plain_int8_agreement_with_fp32"] < MIN_AGREEMENT:
        assert u["reverted_by_nncf"], "plain INT8 missed the agreement budget, yet nothing was reverted"


def test_restorer_parameters_carry_max_reverts():
    from edgefg.compress.quantize import AccuracyBudget, _restorer

    assert _restorer(AccuracyBudget(max_reverts=3), "/tmp").max_num_iterations == 3
    assert _restorer(AccuracyBudget(), "/tmp").max_num_iterations > 10**6  # NNCF's default: unbounded
    assert _restorer(AccuracyBudget(), "/tmp").num_ranking_workers == 1


# ------------------------------------------------------------------------------------------------
# stronger quantizer options


def test_bias_correction_and_calibration_size(tmp_path, tiny_model, image_folder):
    full = _compress(tiny_model, tmp_path / "full", data=image_folder, bias_correction="full")
    off = _compress(tiny_model, tmp_path / "off", data=image_folder, bias_correction="off")
    assert full.report["compression"][-1]["bias_correction"] == "full" and off.report["compression"][-1]["bias_correction"] == "off"
    assert full.report["compression"][-1]["seconds"] > 0  # the option's cost is recorded
    import onnx
    from onnx import numpy_helper

    def biases(p: Path) -> dict:
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(p / "model.onnx")).graph.initializer if i.name.endswith("bias")}

    bf, bo = biases(full.directory), biases(off.directory)
    assert bf.keys() == bo.keys() and any(not np.allclose(bf[k], bo[k]) for k in bf)  # correction changed biases
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\ntype = "int8"\nsubset_size = 6\n')
    small = _compress(tiny_model, tmp_path / "six", data=image_folder, recipe=str(recipe))
    assert small.report["compression"][-1]["calibration_images"] == 6 and small.report["calibration"]["images"] == 6


def test_smooth_quant_on_a_cnn_head(tmp_path, tiny_model, image_folder, frames):
    """NNCF runs SmoothQuant only for transformers: edgefg runs it on a CNN's Gemm head itself; the
    smoothed float model computes the same function, and it works under accuracy control too."""
    import nncf
    import onnx
    import onnxruntime as ort

    from edgefg.compress.quantize import smooth_cnn_head
    from edgefg.converters.torch_to_onnx import export_onnx
    from edgefg.models.loader import load_model

    src = export_onnx(load_model(tiny_model).module.eval(), (64, 64), tmp_path / "m.onnx")
    model = onnx.load(str(src))
    x = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    smoothed = smooth_cnn_head(nncf, model, nncf.Dataset(list(x), lambda a: {"input": a[None]}), 8, 0.5)
    muls = lambda m: sum(n.op_type == "Mul" for n in m.graph.node)  # noqa: E731
    assert muls(smoothed) == muls(model) + 1
    run = lambda m: np.concatenate([ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": a[None]})[0] for a in x])  # noqa: E731
    assert np.abs(run(smoothed) - run(model)).max() < 1e-4
    res = _compress(tiny_model, tmp_path / "sq", data=image_folder, agreement_data=frames, min_agreement=0.5, smooth_quant=0.5)
    q = res.report["compression"][-1]
    assert q["smooth_quant"] == 0.5 and q["smooth_quant_scales"] == 1 and q["method"] == "int8-ptq-agreement-control"
