"""Engine cache keys, stale-engine refusal and the builder's TensorRT calls.

The builder tests use tests/tensorrt/fakes.py: stand-ins that RECORD calls. They verify that edgefg
calls the TensorRT 10 / 8.x Python API as documented with the right settings — not that TensorRT
builds the engine (that needs a Jetson or a GPU host with TensorRT; see test_real_tensorrt_build)."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefg.errors import ModelLoadError, TargetError
from edgefg.manifest import load_manifest
from edgefg.tensorrt.builder import build_engine, build_options, network_flags, trtexec_command
from edgefg.tensorrt.cache import (
    DeviceInfo,
    EngineCache,
    StaleEngineError,
    engine_key,
    read_l4t,
)
from tests.tensorrt.fakes import fake_tensorrt

ORIN = DeviceInfo("10.3.0", "8.7", "36.4.3", "NVIDIA Jetson Orin Nano [p3767-0005]", 8, "12.6", "pycuda")


@pytest.fixture(scope="module")
def trt_bundles(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("trt-bundles")
    return {
        "int8": deploy(tiny_artifacts["int8"], "jetson-orin-nano", root / "int8").directory,
        "fp32": deploy(tiny_artifacts["fp32"], "jetson-agx-orin", root / "fp32", precision="fp32").directory,
        "nano": deploy(tiny_artifacts["fp32"], "jetson-nano", root / "nano", precision="fp16").directory,
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
    assert (key.fp16, key.int8, key.gpu, key.sm_count, key.cuda) == (True, True, ORIN.gpu_name, 8, "12.6")
    variants = [
        replace(ORIN, tensorrt="10.4.0"),  # TensorRT upgrade
        replace(ORIN, compute_capability="7.2"),  # other GPU generation
        replace(ORIN, l4t="36.3.0"),  # other JetPack
        replace(ORIN, gpu_name="NVIDIA Jetson Orin NX [p3767-0000]"),  # same SM 8.7, same L4T, other module
        replace(ORIN, sm_count=4),  # Orin Nano 4 GB
        replace(ORIN, cuda="12.8"),  # CUDA upgraded without a new L4T
    ]
    digests = {key.digest()} | {engine_key(m, d).digest() for d in variants}
    other_model = copy.deepcopy(m)
    other_model.files["model.onnx"] = "0" * 64
    digests |= {engine_key(other_model, ORIN).digest(), engine_key(m, ORIN, dla_core=0).digest(), engine_key(m, ORIN, fp16=False).digest()}
    assert len(digests) == 10
    assert engine_key(m, replace(ORIN, source="nvidia-smi")).digest() == key.digest()  # how it was probed is not the key


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
    upgraded = engine_key(m, replace(ORIN, tensorrt="10.4.0", l4t="36.4.4"))
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


def orin(trt_version="10.3.0", **kw) -> DeviceInfo:
    return DeviceInfo(**{"tensorrt": trt_version, "compute_capability": "8.7", "l4t": "36.4.3",
                         "gpu_name": "NVIDIA Jetson Orin Nano [p3767-0005]", "sm_count": 8, "cuda": "12.6", **kw})


def test_builder_calls_trt10(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    trt = fake_tensorrt("10.3.0")
    res = build_engine(bundle, trt=trt, device=orin())
    rec = trt.rec
    assert rec.find("create_network") == [("create_network", 0)]  # explicit batch is implicit on 10.x
    assert rec.find("parse_from_file") == [("parse_from_file", str(bundle / "model.onnx"))]
    assert rec.find("set_memory_pool_limit") == [("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 1024 << 20)]
    assert [c[1] for c in rec.find("set_flag")] == [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8]
    assert rec.find("set_timing_cache") == [("set_timing_cache", False)]
    assert not rec.find("add_optimization_profile")  # static ONNX: no profile needed
    assert not res.reused and res.engine.read_bytes().startswith(b"FAKEENGINE")
    assert res.engine.parent == bundle / "engines" and res.quantization == "explicit (Q/DQ)" and res.timing_cache == "new"
    timing = list((bundle / "engines").glob("timing-trt10.3.0-sm87-*.cache"))
    assert timing and timing[0].read_bytes().startswith(b"TC|orin|")
    assert "--int8" in res.trtexec and "--calib" not in res.trtexec
    # second call: the cached engine is reused; a forced rebuild feeds the saved timing cache back
    assert build_engine(bundle, trt=fake_tensorrt("10.3.0"), device=orin()).reused
    trt2 = fake_tensorrt("10.3.0")
    assert build_engine(bundle, trt=trt2, device=orin(), force=True).timing_cache == "loaded"
    assert trt2.rec.find("create_timing_cache") == [("create_timing_cache", timing[0].read_bytes())]
    load_manifest(bundle)  # engines are extra files, the manifest's files are untouched
    assert not trt.errors and not trt2.errors


def test_timing_cache_from_another_device_or_unreadable_is_replaced(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    build_engine(bundle, trt=fake_tensorrt(device_tag="other-gpu"), device=orin())  # same key, cache written by another GPU
    timing = next((bundle / "engines").glob("timing-*.cache"))
    trt = fake_tensorrt(device_tag="orin")
    res = build_engine(bundle, trt=trt, device=orin(), force=True)
    # set_timing_cache returned False for the foreign cache: a fresh cache is attached, the build goes on
    assert res.timing_cache == "discarded (other device)" and len(trt.rec.find("set_timing_cache")) == 2
    assert timing.read_bytes().startswith(b"TC|orin|")
    timing.write_bytes(b"garbage")
    trt = fake_tensorrt()
    assert build_engine(bundle, trt=trt, device=orin(), force=True).timing_cache == "discarded (unreadable)"


def test_timing_cache_absent_after_build_is_not_an_error(tmp_path):
    from edgefg.tensorrt.builder import attach_timing_cache, save_timing_cache

    class NoCacheConfig:  # create_timing_cache → None every time: nothing attached, get_timing_cache() → None
        def create_timing_cache(self, data):
            return None

        def get_timing_cache(self):
            return None

    cfg = NoCacheConfig()
    assert attach_timing_cache(cfg, b"old") == "unavailable"
    assert save_timing_cache(cfg, tmp_path / "t.cache") is False and not (tmp_path / "t.cache").exists()


def test_builder_api_per_version(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["nano"], tmp_path / "b")
    trt = fake_tensorrt("8.2.1")  # JetPack 4: max_workspace_size, explicit-batch flag, opset <= 13
    m = load_manifest(bundle)
    build_engine(bundle, build_options(m, workspace_mb=256), trt=trt, device=orin("8.2.1", compute_capability="5.3"), manifest=m)
    rec = trt.rec
    assert rec.find("create_network") == [("create_network", 1)]  # 1 << EXPLICIT_BATCH on 8.x
    assert ("config.max_workspace_size", 256 << 20) in rec.calls and not rec.find("set_memory_pool_limit")
    assert [c[1] for c in rec.find("set_flag")] == [trt.BuilderFlag.FP16]
    assert network_flags(fake_tensorrt("8.5.2")) == 1
    # the fakes hold the line the real bindings hold: no max_workspace_size on 10.x, explicit batch needed on 8.x,
    # an opset-18 ONNX (the AGX Orin bundle, TensorRT 10) does not parse on 8.2
    with pytest.raises(AttributeError):
        fake_tensorrt("10.3.0").Builder(None).create_builder_config().max_workspace_size = 1
    t85 = fake_tensorrt("8.5.2")
    assert not t85.OnnxParser(t85.Builder(None).create_network(0), None).parse_from_file(str(bundle / "model.onnx"))
    with pytest.raises(ModelLoadError, match="opset 18"):
        build_engine(trt_bundles["fp32"], trt=fake_tensorrt("8.2.1"), device=orin("8.2.1"), cache_dir=tmp_path / "c")


def test_dla_on_xavier_trt85(tiny_artifacts, tmp_path):
    from edgefg.deploy import deploy

    bundle = deploy(tiny_artifacts["int8"], "jetson-xavier-nx", tmp_path / "x").directory
    m = load_manifest(bundle)
    trt = fake_tensorrt("8.5.2", dla_cores=2)
    res = build_engine(bundle, build_options(m, dla_core=1), trt=trt, device=orin("8.5.2", compute_capability="7.2", l4t="35.6.0"), manifest=m)
    rec = trt.rec
    assert ("config.default_device_type", trt.DeviceType.DLA) in rec.calls and ("config.DLA_core", 1) in rec.calls
    assert [c[1] for c in rec.find("set_flag")] == [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8, trt.BuilderFlag.GPU_FALLBACK]
    assert res.engine.with_suffix(".calib").read_text().startswith("TRT-8502-EntropyCalibration2\n")
    assert not res.gpu_fallback  # Q/DQ stripped: nothing the fake DLA refuses is left


def test_fp16_on_fp32_bundle_is_its_own_engine_and_dla_fallback_is_reported(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["fp32"], tmp_path / "b")
    m = load_manifest(bundle)
    dev = orin(compute_capability="8.7", gpu_name="NVIDIA Jetson AGX Orin [p3701-0005]", sm_count=16)
    plain = build_engine(bundle, trt=fake_tensorrt(dla_cores=2), device=dev, manifest=m)
    trt = fake_tensorrt(dla_cores=2, dla_unsupported={"REDUCE"})
    fp16 = build_engine(bundle, build_options(m, dla_core=0, fp16=True), trt=trt, device=dev, manifest=m)
    assert not fp16.reused and fp16.key != plain.key and (fp16.key.fp16, plain.key.fp16) == (True, False)
    assert fp16.gpu_fallback and all("REDUCE" in f for f in fp16.gpu_fallback) and len(fp16.gpu_fallback) == 3
    sidecar = json.loads(fp16.engine.with_suffix(".json").read_text())
    assert sidecar["build"]["dla_gpu_fallback"] == fp16.gpu_fallback


def test_dla_int8_uses_implicit_ranges_not_qdq(tiny_artifacts, tmp_path):
    from edgefg.deploy import deploy
    from edgefg.tensorrt.builder import DLA_ONNX, DLA_RANGES

    bundle = deploy(tiny_artifacts["int8"], "jetson-orin-nx", tmp_path / "nx").directory
    m = load_manifest(bundle)
    assert DLA_ONNX in m.files and DLA_RANGES in m.files
    ranges = json.loads((bundle / DLA_RANGES).read_text())
    trt = fake_tensorrt("10.3.0", dla_cores=2)
    res = build_engine(bundle, build_options(m, dla_core=1), trt=trt, device=orin(gpu_name="NVIDIA Jetson Orin NX [p3767-0000]"), manifest=m)
    assert trt.rec.find("parse_from_file") == [("parse_from_file", str(bundle / DLA_ONNX))]
    set_ranges = {c[1]: c[3] for c in trt.rec.find("set_dynamic_range")}
    assert set_ranges and set_ranges.items() <= {k: pytest.approx(v) for k, v in ranges.items()}.items()
    assert res.quantization.startswith("implicit (DLA") and "--calib=" in res.trtexec and DLA_ONNX in res.trtexec
    calib = res.engine.with_suffix(".calib").read_text().splitlines()
    assert calib[0] == "TRT-100300-EntropyCalibration2"
    name, hexval = calib[1].split(": ")
    import struct

    assert struct.unpack(">f", bytes.fromhex(hexval))[0] == pytest.approx(ranges[name] / 127, rel=1e-6)
    # what the old code did — the Q/DQ ONNX on a DLA-default INT8 build — is refused like TensorRT refuses it
    q = fake_tensorrt("10.3.0", dla_cores=2)
    from edgefg.tensorrt.builder import BuildOptions, configure, parse_onnx

    b = q.Builder(None)
    net = b.create_network(0)
    parse_onnx(q, net, None, bundle / "model.onnx")
    cfg = b.create_builder_config()
    configure(q, b, cfg, BuildOptions("int8", True, True, 256, dla_core=0))
    assert b.build_serialized_network(net, cfg) is None


def test_dla_int8_refused_without_implicit_form(trt_bundles, tmp_path):
    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")  # Orin Nano bundle: no DLA, no model.dla.onnx
    m = load_manifest(bundle)
    m.backend_options["engine"]["dla_cores"] = 2
    with pytest.raises(TargetError, match="DLA takes only implicit INT8.*NVIDIA/TensorRT#2222") as err:
        build_engine(bundle, build_options(m, dla_core=0), trt=fake_tensorrt(dla_cores=2), device=orin(), manifest=m)
    assert "re-deploy" in err.value.hint


def test_builder_adds_profile_for_dynamic_onnx_and_reports_parser_errors(trt_bundles, tmp_path):
    bundle = dynamic_batch_bundle(trt_bundles["int8"], tmp_path / "b")
    trt = fake_tensorrt()
    build_engine(bundle, trt=trt, device=orin())
    assert trt.rec.find("add_optimization_profile") == [("add_optimization_profile", {"input": ((1, 3, 64, 64),) * 3})]
    unique = fake_tensorrt()
    import onnx
    from onnx import helper

    model = onnx.load(str(bundle / "model.onnx"))
    model.graph.node.append(helper.make_node("Unique", [model.graph.output[0].name], ["u"], name="u1"))
    (bundle / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="cannot parse 'model.onnx': No importer registered for op: Unique at node 'u1' \\(Unique\\)"):
        build_engine(bundle, trt=unique, device=orin(), force=True, manifest=load_manifest(bundle, verify=False))
    with pytest.raises(TargetError, match="no INT8 support"):
        build_engine(trt_bundles["int8"], trt=fake_tensorrt(fast_int8=False), device=orin(), cache_dir=tmp_path / "c")


def test_parser_8_5_needs_zero_points(trt_bundles, tmp_path):
    import onnx

    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "b")
    model = onnx.load(str(bundle / "model.onnx"))
    assert all(len(n.input) == 3 and n.input[2] for n in model.graph.node if n.op_type.endswith("QuantizeLinear"))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    del dq.input[2:]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for version, ok in (("8.5.2", False), ("10.3.0", True)):
        trt = fake_tensorrt(version)
        net = trt.Builder(None).create_network(1)
        assert trt.OnnxParser(net, None).parse_from_file(str(path)) is ok


def dynamic_batch_bundle(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose ONNX keeps a symbolic batch (what an engine with a profile is built from)."""
    import onnx

    from edgefg.manifest import load_manifest as load

    bundle = copy_bundle(src, dst)
    model = onnx.load(str(bundle / "model.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(bundle / "model.onnx"))
    m = load(bundle, verify=False)
    m.record_files(bundle)
    m.save(bundle)
    return bundle


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

    from edgefg.runtime.engine.bundle import LoadedBundle

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


def test_cli_build_engine_reports_dla_fallback_and_dry_run_dla_int8(trt_bundles, tiny_artifacts, tmp_path, monkeypatch):
    from edgefg.cli import cli
    from edgefg.deploy import deploy
    from tests.tensorrt.fakes import fake_device

    # no pycuda needed to build, but here it answers first
    fake_device(monkeypatch, tmp_path, "10.3.0", pycuda={"sm_count": 16}, dla_cores=2, dla_unsupported={"REDUCE"})
    bundle = copy_bundle(trt_bundles["fp32"], tmp_path / "b")
    r = CliRunner().invoke(cli, ["build-engine", str(bundle), "--dla", "0", "--fp16"])
    assert r.exit_code == 0, r.output
    assert "16 SMs" in r.output and "via pycuda" not in r.output and "GPU facts from pycuda" in r.output
    assert "DLA 0: 3 layer(s) fall back to the GPU" in r.output and "--useDLACore=0 --allowGPUFallback" in r.output
    nx = deploy(tiny_artifacts["int8"], "jetson-orin-nx", tmp_path / "nx").directory
    r = CliRunner().invoke(cli, ["build-engine", str(nx), "--dla", "1", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "model.dla.onnx" in r.output and "--calib=" in r.output and "implicit quantization" in r.output
    r = CliRunner().invoke(cli, ["build-engine", str(trt_bundles["int8"]), "--dla", "0", "--dry-run"])
    assert r.exit_code == 2 and "0 DLA core(s)" in r.output


def test_dry_run_prints_the_engine_path_the_build_writes(trt_bundles, tmp_path, monkeypatch):
    """No placeholder: without TensorRT the line says how the device names the engine; with it (fakes
    here) the dry run prints exactly the path the build then writes."""
    import re as _re

    from edgefg.cli import cli
    from tests.tensorrt.fakes import fake_device

    bundle = copy_bundle(trt_bundles["int8"], tmp_path / "bird-orin")
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError:
        r = CliRunner().invoke(cli, ["build-engine", str(bundle), "--dry-run"])
        assert r.exit_code == 0, r.output
        assert "ENGINE." not in r.output and "<key>.engine" in r.output and "--saveEngine=" + str(bundle / "engines" / "bird-orin-int8.engine") in r.output
    fake_device(monkeypatch, tmp_path, "10.3.0", pycuda={"sm_count": 8})
    r = CliRunner().invoke(cli, ["build-engine", str(bundle), "--dry-run"])
    assert r.exit_code == 0, r.output
    planned = _re.search(r"^engine: (\S+\.engine)$", r.output, _re.M).group(1)
    r = CliRunner().invoke(cli, ["build-engine", str(bundle)])
    assert r.exit_code == 0, r.output
    assert f"built {planned} " in r.output and Path(planned).is_file()
