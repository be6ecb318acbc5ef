"""TensorRT backend: buffer sizing from the manifest, engine I/O checks, the engine-cache lookup
(a stale engine is refused before TensorRT sees it) and the data path through pinned buffers.

`tensorrt` and `pycuda.driver` are replaced here by recording fakes (sys.modules), so these tests
verify edgefg's calls — not TensorRT or CUDA. test_real_tensorrt_backend runs where both import."""
from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.tensorrt.backend import BufferSpec, buffer_specs, check_io
from edgefg.tensorrt.cache import DeviceInfo, EngineCache, StaleEngineError
from tests.tensorrt.fakes import FakeMem, fake_device, fake_tensorrt


@pytest.fixture(scope="module")
def trt_bundle(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    return deploy(tiny_artifacts["int8"], "jetson-orin-nano", tmp_path_factory.mktemp("trt-rt") / "b").directory


def test_buffer_sizes_from_manifest(trt_bundle):
    m = load_manifest(trt_bundle)
    specs = buffer_specs(m)
    assert [(s.name, s.shape, s.is_input, s.nbytes) for s in specs] == [("input", (1, 3, 64, 64), True, 3 * 64 * 64 * 4), ("logits", (1, 3), False, 12)]
    dyn = copy.deepcopy(m)
    dyn.inputs[0].shape = ["batch", 3, 64, 64]
    dyn.backend_options = {}
    with pytest.raises(UnsupportedError, match="dynamic dimension 'batch'"):
        buffer_specs(dyn)
    dyn.backend_options = {"engine": {"batch": 4}}
    assert buffer_specs(dyn)[0].shape == (4, 3, 64, 64)


def test_engine_io_must_match_manifest():
    expected = [BufferSpec("input", (1, 3, 64, 64), np.dtype(np.float32), True), BufferSpec("logits", (1, 3), np.dtype(np.float32), False)]
    check_io(expected, list(expected))
    with pytest.raises(ModelLoadError, match="engine tensor 'logits' is \\(1, 5\\), the manifest says \\(1, 3\\)"):
        check_io(expected, [expected[0], BufferSpec("logits", (1, 5), np.dtype(np.float32), False)])
    with pytest.raises(ModelLoadError, match="no tensor 'input'"):
        check_io(expected, [BufferSpec("x", (1, 3, 64, 64), np.dtype(np.float32), True), expected[1]])


# -- backend through the strict per-version fakes (tests/tensorrt/fakes.py) -----------------------------
@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Install fake tensorrt (a given version) + pycuda; the device facts come from pycuda (SM 8.7, 8 SMs)."""
    return lambda version="10.3.0", **kw: fake_device(monkeypatch, tmp_path, version, **kw)


def build_with(trt, bundle, **kw):
    from edgefg.tensorrt.builder import build_engine

    return build_engine(bundle, trt=trt, **kw)


def copy_bundle(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def xavier_bundle(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    return deploy(tiny_artifacts["int8"], "jetson-xavier-nx", tmp_path_factory.mktemp("trt-rt85") / "b").directory


@pytest.mark.parametrize("version", ["10.3.0", "8.6.1", "8.5.2"])
def test_backend_runs_engine_built_by_the_same_fakes(trt_bundle, xavier_bundle, tmp_path, fakes, version):
    from edgefg.runtime.engine.bundle import LoadedBundle

    bundle = copy_bundle(trt_bundle if version.startswith("10.") else xavier_bundle, tmp_path / "b")  # 8.x: opset 17
    trt, cuda = fakes(version)
    build_with(trt, bundle)  # engine key from the pycuda probe, as the runtime computes it
    FakeMem.registry.clear()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:
        scores = b.scores(x)  # batch 2 on a batch-1 engine: two runs
        assert b.backend.engine_key.sm_count == 8 and b.backend.engine_key.gpu == "Orin (nvgpu)"
    np.testing.assert_allclose(scores, x.mean(axis=(2, 3)), rtol=1e-5)
    assert trt.rec.find("execute_async_v3") and not trt.rec.find("execute_async_v2")  # 8.5+: tensor API
    assert ("pagelocked_empty", (1, 3, 64, 64)) in cuda.log and cuda.log.count("synchronize") == 3  # 2 runs + close
    assert cuda.log[-2:] == ["pop", "detach"]
    assert all(m.freed for m in FakeMem.registry.values())
    assert not trt.errors and not cuda.errors, trt.errors + cuda.errors  # nothing freed after its context went away


def test_backend_bindings_api_on_trt82(tiny_artifacts, tmp_path, fakes):
    from edgefg.deploy import deploy
    from edgefg.runtime.engine.bundle import LoadedBundle

    bundle = deploy(tiny_artifacts["fp32"], "jetson-nano", tmp_path / "nano", precision="fp16").directory
    trt, cuda = fakes("8.2.1")
    build_with(trt, bundle)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:
        np.testing.assert_allclose(b.scores(x), x.mean(axis=(2, 3)), rtol=1e-5)
    assert trt.rec.find("execute_async_v2") and not trt.rec.find("execute_async_v3")
    assert not trt.errors and not cuda.errors


def test_dynamic_shape_engine_gets_input_shape_from_the_manifest(trt_bundle, tmp_path, fakes):
    from edgefg.runtime.engine.bundle import LoadedBundle
    from tests.tensorrt.test_build import dynamic_batch_bundle

    bundle = dynamic_batch_bundle(trt_bundle, tmp_path / "b")
    trt, cuda = fakes("10.3.0")
    build_with(trt, bundle)
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:  # the engine reports (-1, 3, 64, 64): the backend sets the shape on the context
        np.testing.assert_allclose(b.scores(x), x.mean(axis=(2, 3)), rtol=1e-5)
    assert trt.rec.find("set_input_shape") == [("set_input_shape", "input", (1, 3, 64, 64))]
    # the old backend compared the engine's (-1, ...) with the manifest and refused the engine
    import json

    desc = json.loads(next((bundle / "engines").glob("*.engine")).read_bytes()[len(b"FAKEENGINE"):])
    engine_in = BufferSpec("input", tuple(desc["io"][0]["shape"]), np.dtype(np.float32), True)
    assert engine_in.shape == (-1, 3, 64, 64)
    with pytest.raises(ModelLoadError, match=r"\(-1, 3, 64, 64\), the manifest says \(1, 3, 64, 64\)"):
        check_io(buffer_specs(load_manifest(bundle))[:1], [engine_in])


def test_engine_dtypes_are_ours_and_compared():
    from edgefg.tensorrt.backend import check_io, numpy_dtype

    trt = fake_tensorrt("8.5.2")
    with pytest.raises(AttributeError, match="numpy.*bool"):  # what trt.nptype does on NumPy 1.24-1.26
        trt.nptype(trt.DataType.FLOAT)
    assert numpy_dtype(trt.DataType.FLOAT) == np.float32 and numpy_dtype(trt.DataType.BOOL) == np.bool_
    with pytest.raises(UnsupportedError, match="BF16"):
        numpy_dtype(fake_tensorrt("10.3.0").DataType.BF16)
    want = [BufferSpec("ids", (1, 4), np.dtype(np.int64), True)]
    check_io(want, [BufferSpec("ids", (1, 4), np.dtype(np.int32), True)], trt_major=8)  # 8.x: INT64 → INT32
    with pytest.raises(ModelLoadError, match="int32, the manifest says int64"):
        check_io(want, [BufferSpec("ids", (1, 4), np.dtype(np.int32), True)], trt_major=10)
    with pytest.raises(ModelLoadError, match="float16, the manifest says float32"):
        check_io([BufferSpec("x", (1,), np.dtype(np.float32), True)], [BufferSpec("x", (1,), np.dtype(np.float16), True)])


def test_backend_refuses_engine_from_other_tensorrt(trt_bundle, tmp_path, fakes):
    from edgefg.runtime.engine.bundle import LoadedBundle

    bundle = copy_bundle(trt_bundle, tmp_path / "b")
    build_with(fake_tensorrt("10.3.0"), bundle, device=DeviceInfo("10.3.0", "8.7", None, "Orin (nvgpu)", 8, "12.6"))
    trt, _ = fakes("10.7.0")  # JetPack upgraded since the build
    with pytest.raises(StaleEngineError, match=r"TensorRT 10\.3\.0 \(engine\) vs 10\.7\.0 \(here\)") as err:
        LoadedBundle(bundle)
    assert "edgefg build-engine" in err.value.hint
    assert not trt.rec.find("deserialize")  # never handed to TensorRT


def test_backend_finds_engine_built_for_dla(trt_bundle, tmp_path, fakes):
    from edgefg.runtime.engine.bundle import LoadedBundle

    bundle = copy_bundle(trt_bundle, tmp_path / "b")
    trt, cuda = fakes("10.3.0", dla_cores=2)
    build_with(trt, bundle)
    # a DLA build of the same model on this device (as build-engine --dla 1 stores it): `edgefg run` has
    # no DLA option, the newest engine for exactly this device and model is used
    cache = EngineCache(bundle / "engines")
    gpu_key = cache.entries()[0][0]
    cache.store(type(gpu_key).from_dict({**gpu_key.to_dict(), "dla_core": 1}), cache.load(gpu_key), {})
    for p in cache.paths(gpu_key):  # only the DLA engine: with both, the default (GPU) one is used
        p.unlink()
    with LoadedBundle(bundle) as b:
        assert b.backend.engine_key.dla_core == 1 and b.backend._runtime.DLA_core == 1
    assert not trt.errors and not cuda.errors


def test_backend_without_tensorrt_says_how_to_install(trt_bundle, monkeypatch):
    from edgefg.runtime.engine.bundle import LoadedBundle

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like on a machine without it
    with pytest.raises(MissingDependencyError, match="TensorRT Python bindings") as err:
        LoadedBundle(trt_bundle)
    assert "system-site-packages" in err.value.hint


def test_real_tensorrt_backend(trt_bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable on this machine; runs on a Jetson / GPU host with TensorRT")
    pytest.importorskip("pycuda.driver", reason="pycuda needs CUDA; runs on a Jetson / GPU host")
    import shutil

    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.tensorrt.builder import build_engine

    bundle = tmp_path / "b"
    shutil.copytree(trt_bundle, bundle)
    build_engine(bundle)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:
        assert b.scores(x).shape == (2, 3)
