"""Engine cache keys, stale-engine refusal and the builder's TensorRT calls.

The builder tests use tests/trt_fakes.py: stand-ins that RECORD calls. They verify that edgefg
calls the TensorRT 10 / 8.x Python API as documented with the right settings — not that TensorRT
builds the engine (that needs a Jetson or a GPU host with TensorRT; see test_real_tensorrt_build)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefg.errors import MissingDependencyError, ModelLoadError, TargetError
from edgefg.manifest import load_manifest
from edgefg.tensorrt.builder import build_engine, build_options, network_flags, trtexec_command
from edgefg.tensorrt.cache import (
    DeviceInfo,
    EngineCache,
    EngineKey,
    StaleEngineError,
    engine_key,
    read_l4t,
)
from tests.trt_fakes import FakeCudaDevice, fake_tensorrt

ORIN = DeviceInfo("10.3.0", "8.7", "36.4.3", "Orin")


@pytest.fixture(scope="module")
def trt_bundles(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("trt-bundles")
    return {
        "int8": deploy(tiny_artifacts["int8"], "jetson-orin-nano", root / "int8").directory,
        "fp32": deploy(tiny_artifacts["fp32"], "jetson-agx-orin", root / "fp32", precision="fp32").directory,
    }


def copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_read_l4t(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    assert read_l4t(f) == "36.4.3"
    assert read_l4t(tmp_path / "missing") is None


def test_engine_key_covers_every_validity_field(trt_bundles):
    m = load_manifest(trt_bundles["int8"])
    key = engine_key(m, ORIN)
    assert key.model_sha256 == m.files["model.onnx"] and key.precision == "int8" and key.batch == 1
    variants = [
        DeviceInfo("10.4.0", "8.7", "36.4.3"),  # TensorRT upgrade
        DeviceInfo("10.3.0", "7.2", "36.4.3"),  # other GPU
        DeviceInfo("10.3.0", "8.7", "36.3.0"),  # other JetPack
    ]
    digests = {key.digest()} | {engine_key(m, d).digest() for d in variants}
    other_model = copy.deepcopy(m)
    other_model.files["model.onnx"] = "0" * 64
    digests |= {engine_key(other_model, ORIN).digest(), engine_key(m, ORIN, dla_core=0).digest()}
    assert len(digests) == 6
    assert engine_key(m, DeviceInfo("10.3.0", "8.7", "36.4.3", "renamed")).digest() == key.digest()


def test_cache_refuses_stale_and_corrupt_engines(trt_bundles, tmp_path):
    m = load_manifest(trt_bundles["int8"])
    cache = EngineCache(tmp_path / "engines")
    with pytest.raises(StaleEngineError, match="no TensorRT engine built for this device.*") as err:
        cache.load(engine_key(m, ORIN), "B")
    assert "edgefg build-engine B" in err.value.hint
    path = cache.store(engine_key(m, ORIN), b"engine-for-10.3", {"note": "test"})
    assert cache.load(engine_key(m, ORIN)) == b"engine-for-10.3"
    assert path.read_bytes() == b"engine-for-10.3"  # nothing spliced into the engine file
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["key"]["tensorrt"] == "10.3.0" and sidecar["build"] == {"note": "test"}
    upgraded = engine_key(m, DeviceInfo("10.4.0", "8.7", "36.4.4"))
    with pytest.raises(StaleEngineError, match=r"TensorRT 10\.3\.0 \(engine\) vs 10\.4\.0 \(here\); L4T/JetPack 36\.4\.3 \(engine\) vs 36\.4\.4 \(here\)") as err:
        cache.load(upgraded, "B")
    assert "rebuild" in err.value.hint and "edgefg build-engine B" in err.value.hint
    path.write_bytes(b"tampered")
    with pytest.raises(StaleEngineError, match="corrupt"):
        cache.load(engine_key(m, ORIN))


def test_build_request_checks(trt_bundles):
    int8, fp32 = load_manifest(trt_bundles["int8"]), load_manifest(trt_bundles["fp32"])
    with pytest.raises(TargetError, match="not quantized.*explicit quantization"):
        build_options(fp32, int8=True)
    with pytest.raises(TargetError, match="DLA core 0 requested but target 'jetson-orin-nano' has 0"):
        build_options(int8, dla_core=0)
    with pytest.raises(TargetError, match="DLA runs only FP16 or INT8"):
        build_options(fp32, dla_core=1)
    assert build_options(fp32, dla_core=1, fp16=True).dla_core == 1
    opts = build_options(int8, workspace_mb=256)
    assert (opts.fp16, opts.int8, opts.workspace_mb, opts.batch) == (True, True, 256, 1)


def test_trtexec_command_per_version():
    from edgefg.tensorrt.builder import BuildOptions

    opts = BuildOptions("int8", True, True, 512, dla_core=1)
    cmd = trtexec_command(Path("b/model.onnx"), Path("b/engines/x.engine"), opts, "10.3.0", Path("t.cache"))
    assert "--memPoolSize=workspace:512" in cmd and "--fp16 --int8" in cmd and "--useDLACore=1 --allowGPUFallback" in cmd
    assert "--timingCacheFile=t.cache" in cmd and "--calib" not in cmd
    assert "--workspace=512" in trtexec_command(Path("m.onnx"), Path("e"), opts, "8.2.1")


def test_builder_calls_trt10(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    trt = fake_tensorrt("10.3.0")
    res = build_engine(bundle, trt=trt, cuda_device=FakeCudaDevice())
    rec = trt.rec
    assert rec.find("create_network") == [("create_network", 0)]  # explicit batch is implicit on 10.x
    assert rec.find("parse_from_file") == [("parse_from_file", str(bundle / "model.onnx"))]
    assert rec.find("set_memory_pool_limit") == [("set_memory_pool_limit", "MemoryPoolType.WORKSPACE", 1024 << 20)]
    assert [c[1] for c in rec.find("set_flag")] == ["BuilderFlag.FP16", "BuilderFlag.INT8"]
    assert rec.find("set_timing_cache") == [("set_timing_cache", False)]
    assert not rec.find("add_optimization_profile")  # static ONNX: no profile needed
    assert not res.reused and res.engine.read_bytes() == b"serialized-engine"
    assert res.engine.parent == bundle / "engines"
    timing = list((bundle / "engines").glob("timing-trt10.3.0-sm87.cache"))
    assert timing and timing[0].read_bytes() == b"timing:"
    assert "--int8" in res.trtexec
    # second call: the cached engine is reused; a forced rebuild feeds the saved timing cache back
    assert build_engine(bundle, trt=fake_tensorrt("10.3.0"), cuda_device=FakeCudaDevice()).reused
    trt2 = fake_tensorrt("10.3.0")
    build_engine(bundle, trt=trt2, cuda_device=FakeCudaDevice(), force=True)
    assert trt2.rec.find("create_timing_cache") == [("create_timing_cache", b"timing:")]
    # the bundle still verifies: engines are extra files, the manifest's files are untouched
    load_manifest(bundle)


def test_builder_calls_trt82_and_dla(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["fp32"], tmp_path / "b")
    trt = fake_tensorrt("8.2.1", modern=False, dla_cores=2)
    m = load_manifest(bundle)
    opts = build_options(m, workspace_mb=256, dla_core=1, fp16=True)
    build_engine(bundle, opts, trt=trt, cuda_device=FakeCudaDevice((7, 2), "Xavier"), manifest=m)
    rec = trt.rec
    assert rec.find("create_network") == [("create_network", 1)]  # 1 << EXPLICIT_BATCH on 8.x
    assert ("config.max_workspace_size", 256 << 20) in rec.calls and not rec.find("set_memory_pool_limit")
    assert ("config.default_device_type", "DeviceType.DLA") in rec.calls and ("config.DLA_core", 1) in rec.calls
    assert [c[1] for c in rec.find("set_flag")] == ["BuilderFlag.FP16", "BuilderFlag.GPU_FALLBACK"]
    assert network_flags(fake_tensorrt("8.5.2")) == 1


def test_builder_adds_profile_for_dynamic_onnx_and_reports_parser_errors(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    trt = fake_tensorrt(input_shape=(-1, 3, 64, 64))
    build_engine(bundle, trt=trt, cuda_device=FakeCudaDevice())
    assert trt.rec.find("add_optimization_profile") == [("add_optimization_profile", {"input": ((1, 3, 64, 64),) * 3})]
    with pytest.raises(ModelLoadError, match="cannot parse 'model.onnx': no importer for Unique at node 'u1' \\(Unique\\)"):
        build_engine(bundle, trt=fake_tensorrt(parse_errors=[("no importer for Unique", "u1")]), cuda_device=FakeCudaDevice(), force=True)
    with pytest.raises(TargetError, match="no INT8 support"):
        build_engine(bundle, trt=fake_tensorrt(fast_int8=False), cuda_device=FakeCudaDevice((5, 3)), force=True)


def test_cli_dry_run_and_missing_tensorrt(trt_bundles):
    from edgefg.cli import cli

    r = CliRunner().invoke(cli, ["build-engine", str(trt_bundles["int8"]), "--dry-run", "--workspace-mb", "256"])
    assert r.exit_code == 0, r.output
    assert "trtexec --onnx=" in r.output and "--memPoolSize=workspace:256" in r.output and "TensorRT 10.3" in r.output
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError:
        r = CliRunner().invoke(cli, ["build-engine", str(trt_bundles["int8"])])
        assert r.exit_code == 2 and "system-site-packages" in r.output


def test_real_tensorrt_build_and_run(trt_bundles, tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installable on this machine (no wheels here); runs on a Jetson / GPU host with TensorRT")
    pytest.importorskip("pycuda.driver", reason="pycuda needs CUDA; runs on a Jetson / GPU host")
    import numpy as np

    from edgefg.runtime.model import LoadedBundle

    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    res = build_engine(bundle)
    assert res.engine.is_file() and res.device.tensorrt == trt.__version__
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    m = load_manifest(bundle)
    host = copy.deepcopy(m)
    host.backend, host.backend_options = "onnxruntime", {}
    with LoadedBundle(bundle) as trt_b, LoadedBundle(bundle, manifest=host) as ort_b:
        a, b = trt_b.scores(x), ort_b.scores(x)
    assert a.shape == (3, 3)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99
