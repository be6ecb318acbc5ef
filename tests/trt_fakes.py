"""Minimal stand-ins for the TensorRT Python API and a pycuda Device that RECORD the calls edgefg
makes. They verify edgefg's calls and settings against the API as documented — not TensorRT itself;
tests that need real TensorRT use pytest.importorskip("tensorrt")."""
from __future__ import annotations

import types


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def add(self, *call):
        self.calls.append(call)

    def names(self):
        return [c[0] for c in self.calls]

    def find(self, name):
        return [c for c in self.calls if c[0] == name]


class _Enum:
    def __init__(self, prefix, **members):
        for k, v in members.items():
            setattr(self, k, f"{prefix}.{k}" if v is None else v)


class FakeTimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return b"timing:" + bytes(self.data)


class FakeConfig:
    def __init__(self, rec, modern=True):
        object.__setattr__(self, "rec", rec)
        object.__setattr__(self, "_cache", None)
        if modern:
            object.__setattr__(self, "set_memory_pool_limit", lambda pool, size: rec.add("set_memory_pool_limit", pool, size))

    def __setattr__(self, name, value):
        self.rec.add("config." + name, value)
        object.__setattr__(self, name, value)

    def set_flag(self, flag):
        self.rec.add("set_flag", flag)

    def create_timing_cache(self, data):
        self.rec.add("create_timing_cache", bytes(data))
        return FakeTimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.rec.add("set_timing_cache", ignore_mismatch)
        object.__setattr__(self, "_cache", cache)
        return True

    def get_timing_cache(self):
        return self._cache

    def add_optimization_profile(self, profile):
        self.rec.add("add_optimization_profile", profile.shapes)


class FakeTensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeNetwork:
    def __init__(self, inputs):
        self._inputs = inputs

    @property
    def num_inputs(self):
        return len(self._inputs)

    def get_input(self, i):
        return self._inputs[i]


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class FakeBuilder:
    def __init__(self, trt, logger):
        self.trt = trt
        self.platform_has_fast_fp16 = trt.fast_fp16
        self.platform_has_fast_int8 = trt.fast_int8
        self.num_DLA_cores = trt.dla_cores

    def create_network(self, flags):
        self.trt.rec.add("create_network", flags)
        return FakeNetwork([FakeTensor("input", self.trt.input_shape)])

    def create_builder_config(self):
        return FakeConfig(self.trt.rec, modern=self.trt.modern)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.trt.rec.add("build_serialized_network")
        return self.trt.engine_bytes


class FakeParserError:
    def __init__(self, desc, node):
        self._d, self._n = desc, node

    def desc(self):
        return self._d

    def node_name(self):
        return self._n

    def node_operator(self):
        return "Unique"


class FakeParser:
    def __init__(self, trt):
        self.trt = trt
        self.num_errors = 0

    def parse_from_file(self, path):
        self.trt.rec.add("parse_from_file", path)
        if self.trt.parse_errors:
            self.num_errors = len(self.trt.parse_errors)
            return False
        return True

    def get_error(self, i):
        return FakeParserError(*self.trt.parse_errors[i])


def fake_tensorrt(version="10.3.0", modern=True, fast_fp16=True, fast_int8=True, dla_cores=0, input_shape=(1, 3, 64, 64), engine_bytes=b"serialized-engine", parse_errors=()):
    trt = types.SimpleNamespace()
    trt.__version__ = version
    trt.rec = Recorder()
    trt.modern, trt.fast_fp16, trt.fast_int8, trt.dla_cores = modern, fast_fp16, fast_int8, dla_cores
    trt.input_shape, trt.engine_bytes, trt.parse_errors = input_shape, engine_bytes, list(parse_errors)

    class Logger:
        WARNING, VERBOSE = "WARNING", "VERBOSE"

        def __init__(self, level):
            trt.rec.add("Logger", level)

    trt.Logger = Logger
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = lambda network, logger: FakeParser(trt)
    trt.MemoryPoolType = _Enum("MemoryPoolType", WORKSPACE=None)
    trt.BuilderFlag = _Enum("BuilderFlag", FP16=None, INT8=None, GPU_FALLBACK=None)
    trt.DeviceType = _Enum("DeviceType", DLA=None, GPU=None)
    trt.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", EXPLICIT_BATCH=0)
    return trt


class FakeCudaDevice:
    def __init__(self, cc=(8, 7), name="Orin (nvgpu)"):
        self._cc, self._name = cc, name

    def compute_capability(self):
        return self._cc

    def name(self):
        return self._name
