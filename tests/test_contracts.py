"""Contract tests, parametrised over the registries: a backend, converter or target profile added to
edgefg is held to the same contract as the ones already there, without a test written for it.

- every **backend** in ``edgefg.formats.BACKENDS`` imports as a :class:`Backend` named by its key (or
  says which extra installs its engine) and, on a real bundle, turns a batch into finite float32
  scores of shape (N, classes); TensorRT runs through the strict per-version fakes (tests/tensorrt/fakes.py);
- every **converter** in the registry writes the format table's model file for a target of its
  destination format, with the backend options the table gives that backend;
- every **target profile** names a backend and format of the table, a backend that reads that format,
  a converter that produces it, known precisions and known budget keys.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefg.converters import find_converter, registry
from edgefg.errors import MissingDependencyError, TargetError, UnsupportedError
from edgefg.formats import BACKENDS, FORMATS, default_backend_options, stand_in
from edgefg.manifest import load_manifest
from edgefg.runtime.backends.base import Backend, backend_class
from edgefg.targets import BUDGET_KEYS, list_targets, load_target

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32", "fp16", "bf16", "int8"}
# a target profile per destination format, to deploy the tiny artifact for
TARGET_FOR_FORMAT = {"onnx": "onnxruntime-cpu", "openvino": "intel-cpu", "tflite": "rpi5", "tensorrt-onnx": "jetson-orin-nano"}


def _bundle(request, fmt: str, precision: str = "int8"):
    """A bundle of the tiny model for a target of format ``fmt`` (reusing the session's bundles)."""
    if fmt == "tflite":
        return request.getfixturevalue("tflite_bundles")[precision]
    if fmt in ("onnx", "openvino"):
        return request.getfixturevalue("tiny_bundles")[f"{precision}-{TARGET_FOR_FORMAT[fmt]}"]
    from edgefg.deploy import deploy

    out = request.getfixturevalue("tmp_path") / f"{fmt}-{precision}"
    return deploy(request.getfixturevalue("tiny_artifacts")[precision], TARGET_FOR_FORMAT[fmt], out).directory


# -- backends ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_is_registered_under_its_name(name):
    try:
        cls = backend_class(name)
    except MissingDependencyError as exc:  # its engine is not installed here: the error names the extra
        assert BACKENDS[name].extra in exc.hint
        return
    assert issubclass(cls, Backend) and cls.name == name and cls.engine_module
    assert BACKENDS[name].stand_in is None or BACKENDS[name].stand_in in BACKENDS


def _tensorrt_fakes(monkeypatch, tmp_path, bundle):
    """The fake TensorRT 10.3 device of tests/tensorrt/fakes.py, an engine built for the bundle with it (no GPU here)."""
    from edgefg.tensorrt.builder import build_engine
    from tests.tensorrt.fakes import fake_device

    trt, _ = fake_device(monkeypatch, tmp_path)
    build_engine(bundle, trt=trt)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_runs_a_bundle(name, request, monkeypatch, tmp_path):
    from edgefg.runtime.engine.bundle import LoadedBundle

    fmt = next(f for f in FORMATS.values() if f.read_by[0] == name).name
    bundle = _bundle(request, fmt)
    if name == "tensorrt":
        bundle = shutil.copytree(bundle, tmp_path / "trt")
        _tensorrt_fakes(monkeypatch, tmp_path, bundle)
    else:
        try:
            backend_class(name)
        except MissingDependencyError as exc:
            pytest.skip(f"{name} engine not installed: {exc.message}")
    with LoadedBundle(bundle) as b:
        assert type(b.backend).name == name and b.backend.input_spec == b.manifest.inputs[0]
        spec = b.manifest.inputs[0]
        shape = [2] + [int(d) for d in spec.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        if spec.dtype in ("uint8", "int8"):
            x = np.clip(x * 40, -128, 127).astype(spec.dtype)
        scores = b.scores(x)
        assert b.backend.last_infer_ms > 0  # the base class times every call
        with pytest.raises(UnsupportedError, match=f"takes {spec.dtype} input, got float64"):  # fed checks: the base class, one message
            b.scores(x.astype(np.float64))
        with pytest.raises(UnsupportedError, match="the model takes input of shape"):
            b.scores(x[..., :-1])
    assert scores.shape == (2, len(b.labels)) and scores.dtype == np.float32 and np.isfinite(scores).all()


# -- converters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(registry()), ids=lambda k: f"{k[0]}->{k[1]}")
def test_converter_writes_the_format_tables_file(key, request):
    src, dst = key
    conv = registry()[key]
    assert conv.src == src and conv.dst == dst and conv.description and src in FORMATS and dst in FORMATS
    bundle = _bundle(request, dst)
    m = load_manifest(bundle)
    tgt = load_target(TARGET_FOR_FORMAT[dst])
    assert m.format == dst and m.model_file == FORMATS[dst].model_file and (bundle / m.model_file).is_file()
    assert m.backend == tgt.backend and tgt.backend in FORMATS[dst].read_by
    assert default_backend_options(tgt.backend, tgt.device).items() <= m.backend_options.items()
    assert m.compression[-1]["converters"] == [f"{src}->{dst}"]
    if stand_in(m.backend):  # the parity check ran in the host stand-in
        assert m.parity["candidate_runtime"].startswith(stand_in(m.backend))


# -- target profiles --------------------------------------------------------------------------------
@pytest.mark.parametrize("target", list_targets(), ids=lambda t: t.name)
def test_target_profile_is_consistent_with_the_tables(target):
    assert target.backend in BACKENDS and target.format in FORMATS
    assert target.backend in FORMATS[target.format].read_by, f"{target.backend} does not read {target.format} files"
    assert find_converter("onnx", target.format).dst == target.format
    assert target.precisions and set(target.precisions) <= PRECISIONS
    assert set(target.budget) <= set(BUDGET_KEYS) and all(isinstance(v, (int, float)) for v in target.budget.values())
    assert target.layout in ("NCHW", "NHWC") and target.status in ("available", "planned")
    assert load_target(target.name).name == target.name and all(load_target(a).name == target.name for a in target.aliases)
    if not target.available:
        with pytest.raises(TargetError, match="not available yet"):
            target.require_available()


def _profile(tmp_path, base: str, extra: str):
    """A user's profile: the built-in ``base`` renamed to "custom", with ``extra`` top-level keys."""
    lines = open(load_target(base).path, encoding="utf-8").read().replace(f'name = "{base}"', 'name = "custom"').splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    path = tmp_path / f"custom-{len(list(tmp_path.glob('custom-*')))}.toml"
    path.write_text("\n".join(lines[:first_table] + [extra] + lines[first_table:]) + "\n", encoding="utf-8")
    return path


def test_deploy_refuses_an_op_the_profile_lists_as_unsupported(tmp_path, tiny_artifacts):
    from edgefg.deploy import deploy

    path = _profile(tmp_path, "onnxruntime-cpu", 'unsupported_ops = ["Conv", "Unique"]')
    assert load_target(path).unsupported_ops == ["Conv", "Unique"]
    with pytest.raises(TargetError, match=r"uses Conv, which target 'custom' does not support"):
        deploy(tiny_artifacts["fp32"], path, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    ok = _profile(tmp_path, "onnxruntime-cpu", 'unsupported_ops = ["Unique"]')  # an op the model does not use
    assert deploy(tiny_artifacts["fp32"], ok, tmp_path / "b2").directory.is_dir()


def test_a_budget_key_nothing_reads_is_an_error(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('name = "t"\ndescription = "d"\nfamily = "f"\nbackend = "onnxruntime"\nformat = "onnx"\nprecisions = ["fp32"]\n'
                    "[budget]\nmax_top1_drop = 1.0\nmax_acc_drop = 2.0\n", encoding="utf-8")
    with pytest.raises(TargetError, match="unknown \\[budget\\] keys: max_acc_drop"):
        load_target(path)


def test_tune_takes_every_budget_key_from_the_profile(tmp_path):
    from edgefg.tune.api import target_budgets
    from edgefg.tune.options import Budget, TuneOptions

    path = tmp_path / "t.toml"
    path.write_text('name = "t"\ndescription = "d"\nfamily = "f"\nbackend = "onnxruntime"\nformat = "onnx"\nprecisions = ["fp32"]\n'
                    "[budget]\nmax_top1_drop = 1.0\nmax_class_drop = 9.0\nmax_latency_ms = 5.0\nmax_size_mb = 3.0\n", encoding="utf-8")
    opts = TuneOptions(model=tmp_path, data=tmp_path, val_data=tmp_path, targets=[str(path)], out=tmp_path, budget=Budget(max_latency_ms=2.0))
    assert target_budgets(opts)[str(path)] == Budget(max_latency_ms=2.0, max_size_mb=3.0, max_drop=1.0, max_class_drop=9.0)


def test_the_format_table_imports_no_engine():
    """formats.py is read by the device runtime: plain data, no engine/numpy/torch import."""
    import subprocess

    code = "import sys, edgefg.formats; print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'openvino', 'onnxruntime', 'tensorrt', 'onnx'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_an_unknown_target_suggests_the_closest_name():
    with pytest.raises(TargetError) as err:
        load_target("jetson-orin-nan")
    assert "did you mean 'jetson-orin-nano'?" in err.value.hint
    with pytest.raises(TargetError) as err:
        load_target("zzzz")
    assert "did you mean" not in err.value.hint and "known targets:" in err.value.hint
