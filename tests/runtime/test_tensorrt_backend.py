"""TensorRT backend: buffer sizing from the manifest, engine I/O checks, the engine-cache lookup
(a stale engine is refused before TensorRT sees it) and the data path through pinned buffers.

`tensorrt` and `pycuda.driver` are replaced here by recording fakes (sys.modules), so these tests
verify edgefg's calls — not TensorRT or CUDA. test_real_tensorrt_backend runs where both import."""
from __future__ import annotations

import copy
import sys
import types

import numpy as np
import pytest

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import load_manifest
from edgefg.runtime.backends.tensorrt import BufferSpec, buffer_specs, check_io, engine_io
from edgefg.tensorrt.cache import DeviceInfo, EngineCache, StaleEngineError, engine_key


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


# -- recording fakes of tensorrt + pycuda.driver -------------------------------------------------
class FakeMem:
    registry: dict[int, "FakeMem"] = {}

    def __init__(self, nbytes):
        self.buf = np.zeros(nbytes, np.uint8)
        self.freed = False
        FakeMem.registry[id(self)] = self

    def __int__(self):
        return id(self)

    def free(self):
        self.freed = True


def fake_cuda(log):
    cuda = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class Ctx:
        def push(self):
            log.append("push")

        def pop(self):
            log.append("pop")

        def detach(self):
            log.append("detach")

    class Device:
        def __init__(self, i):
            self.i = i

        def compute_capability(self):
            return (8, 7)

        def name(self):
            return "Orin"

        def make_context(self):
            log.append("make_context")
            return Ctx()

    class Stream:
        handle = 1234

        def synchronize(self):
            log.append("synchronize")

    def pagelocked_empty(shape, dtype):
        log.append(("pagelocked_empty", tuple(shape)))
        return np.empty(shape, dtype)

    def htod(dst, src, stream):
        log.append("htod")
        dst.buf = np.frombuffer(src.tobytes(), np.uint8).copy()

    def dtoh(dst, src, stream):
        log.append("dtoh")
        dst[...] = np.frombuffer(src.buf.tobytes(), dst.dtype).reshape(dst.shape)

    cuda.Error, cuda.Device, cuda.Stream = Error, Device, Stream
    cuda.init = lambda: log.append("init")
    cuda.pagelocked_empty, cuda.mem_alloc = pagelocked_empty, FakeMem
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = htod, dtoh
    return cuda


def fake_trt(version, log, legacy=False):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dt: dt
    io = [("input", (1, 3, 64, 64), True), ("logits", (1, 3), False)]

    class Context:
        def __init__(self):
            self.addr = {}

        def set_tensor_address(self, name, ptr):
            log.append(("set_tensor_address", name))
            self.addr[name] = ptr

        def _compute(self, x_ptr, y_ptr):
            x = np.frombuffer(FakeMem.registry[x_ptr].buf.tobytes(), np.float32).reshape(1, 3, 64, 64)
            FakeMem.registry[y_ptr].buf = np.frombuffer(x.mean(axis=(2, 3)).astype(np.float32).tobytes(), np.uint8).copy()
            return True

        def execute_async_v3(self, stream_handle):
            log.append(("execute_async_v3", stream_handle))
            return self._compute(self.addr["input"], self.addr["logits"])

    class LegacyContext(Context):
        def execute_async_v2(self, bindings, stream_handle):
            log.append(("execute_async_v2", stream_handle))
            return self._compute(bindings[0], bindings[1])

    class Engine:
        num_io_tensors = len(io)

        def get_tensor_name(self, i):
            return io[i][0]

        def get_tensor_shape(self, name):
            return next(s for n, s, _ in io if n == name)

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_mode(self, name):
            return "INPUT" if next(i for n, _, i in io if n == name) else "OUTPUT"

        def create_execution_context(self):
            return Context()

    class LegacyEngine:
        num_bindings = len(io)

        def get_binding_name(self, i):
            return io[i][0]

        def get_binding_shape(self, i):
            return io[i][1]

        def get_binding_dtype(self, i):
            return np.float32

        def binding_is_input(self, i):
            return io[i][2]

        def create_execution_context(self):
            ctx = LegacyContext()
            return types.SimpleNamespace(execute_async_v2=ctx.execute_async_v2)

    class Logger:
        WARNING = "W"

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            log.append(("deserialize", bytes(blob)))
            return LegacyEngine() if legacy else Engine()

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


@pytest.fixture
def fakes(monkeypatch):
    def install(version="10.3.0", legacy=False):
        log: list = []
        cuda = fake_cuda(log)
        pkg = types.ModuleType("pycuda")
        pkg.driver = cuda
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", fake_trt(version, log, legacy))
        monkeypatch.setattr("edgefg.tensorrt.cache.TEGRA_RELEASE", __import__("pathlib").Path("/nonexistent"))
        return log

    return install


def store_engine(bundle, trt_version):
    m = load_manifest(bundle)
    key = engine_key(m, DeviceInfo(trt_version, "8.7", None))
    return EngineCache(bundle / "engines").store(key, f"engine-{trt_version}".encode(), {})


@pytest.mark.parametrize("legacy", [False, True], ids=["tensor-api", "bindings-api"])
def test_backend_runs_cached_engine_through_pinned_buffers(trt_bundle, tmp_path, fakes, legacy):
    import shutil

    from edgefg.runtime.model import LoadedBundle

    bundle = tmp_path / "b"
    shutil.copytree(trt_bundle, bundle)
    store_engine(bundle, "10.3.0")
    log = fakes("10.3.0", legacy=legacy)
    FakeMem.registry.clear()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:
        scores = b.scores(x)  # batch 2 on a batch-1 engine: two runs
    np.testing.assert_allclose(scores, x.mean(axis=(2, 3)), rtol=1e-6)
    assert ("deserialize", b"engine-10.3.0") in log
    assert ("pagelocked_empty", (1, 3, 64, 64)) in log and ("pagelocked_empty", (1, 3)) in log
    run = ("execute_async_v2" if legacy else "execute_async_v3", 1234)
    assert log.count(run) == 2 and log.count("htod") == 2 and log.count("dtoh") == 2 and log.count("synchronize") == 2
    assert log[-2:] == ["pop", "detach"] and log.count("push") == log.count("pop") - 1  # make_context pushes once
    assert FakeMem.registry and all(m.freed for m in FakeMem.registry.values())  # device buffers freed on close


def test_backend_refuses_engine_from_other_tensorrt(trt_bundle, tmp_path, fakes):
    import shutil

    from edgefg.runtime.model import LoadedBundle

    bundle = tmp_path / "b"
    shutil.copytree(trt_bundle, bundle)
    store_engine(bundle, "10.3.0")
    log = fakes("10.7.0")  # JetPack upgraded since the build
    with pytest.raises(StaleEngineError, match=r"TensorRT 10\.3\.0 \(engine\) vs 10\.7\.0 \(here\)") as err:
        LoadedBundle(bundle)
    assert "edgefg build-engine" in err.value.hint
    assert not [e for e in log if isinstance(e, tuple) and e[0] == "deserialize"]  # never handed to TensorRT


def test_backend_finds_engine_built_for_dla(trt_bundle, tmp_path, fakes):
    import shutil

    from edgefg.runtime.model import LoadedBundle

    bundle = tmp_path / "b"
    shutil.copytree(trt_bundle, bundle)
    m = load_manifest(bundle)
    EngineCache(bundle / "engines").store(engine_key(m, DeviceInfo("10.3.0", "8.7", None), dla_core=1), b"dla-engine", {})
    log = fakes("10.3.0")
    with LoadedBundle(bundle) as b:  # `edgefg run` has no DLA option: the device's DLA engine is found
        assert b.backend.engine_key.dla_core == 1 and b.backend._runtime.DLA_core == 1
    assert ("deserialize", b"dla-engine") in log


def test_backend_without_tensorrt_says_how_to_install(trt_bundle, monkeypatch):
    from edgefg.runtime.model import LoadedBundle

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails like on a machine without it
    with pytest.raises(MissingDependencyError, match="TensorRT Python bindings") as err:
        LoadedBundle(trt_bundle)
    assert "system-site-packages" in err.value.hint


def test_real_tensorrt_backend(trt_bundle, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable on this machine; runs on a Jetson / GPU host with TensorRT")
    pytest.importorskip("pycuda.driver", reason="pycuda needs CUDA; runs on a Jetson / GPU host")
    import shutil

    from edgefg.runtime.model import LoadedBundle
    from edgefg.tensorrt.builder import build_engine

    bundle = tmp_path / "b"
    shutil.copytree(trt_bundle, bundle)
    build_engine(bundle)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with LoadedBundle(bundle) as b:
        assert b.scores(x).shape == (2, 3)
