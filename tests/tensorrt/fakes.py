"""Stand-ins for the TensorRT Python bindings and pycuda, strict per TensorRT version.

They are not TensorRT: they check edgefg's calls against the API surface and the behaviour that
NVIDIA's bindings have in each release (python/src/infer/pyCore.cpp of release/8.2, 8.5, 8.6, 10.3;
onnx-tensorrt importers), and they refuse what the real library refuses:

- API per version: 10.x has no bindings API (``num_bindings``, ``execute_async_v2``,
  ``set_binding_shape``) and no ``max_workspace_size``; 8.2 has no tensor-name API, no
  ``set_memory_pool_limit``; pybind objects reject unknown attributes (AttributeError).
- ``trt.nptype`` of 8.5/8.6 builds a dict with ``np.bool`` (python/packaging/tensorrt/__init__.py), which
  raises AttributeError on NumPy 1.24–1.26 — simulated here whatever NumPy is installed.
- 8.x parsers before 8.6 reject Q/DQ with fewer than 3 inputs; opsets above the release's limit fail.
- ``create_timing_cache`` returns None for bytes it cannot read, ``set_timing_cache`` returns False for
  a cache from another device (ignore_mismatch=False), ``get_timing_cache`` is None when none was set.
- ``build_serialized_network`` returns None for explicit Q/DQ on a DLA-default build (DLA takes only
  implicit INT8), for Q/DQ without the INT8 flag, and for dynamic inputs without an optimization profile.
- An engine built from an ONNX with a dynamic batch reports -1 until ``set_input_shape``; 8.x turns
  INT64 I/O into INT32; execution with unset shapes or unset tensor addresses fails.
- Teardown is checked: engines/execution contexts destroyed without their CUDA context current (or
  after it was detached), CUDA memory/streams/page-locked buffers released without their context
  current, or a context detached with live allocations, are recorded in ``errors`` (tests assert
  they stay empty). Engine → runtime and context → engine references are kept alive as pybind's
  ``keep_alive`` does.

The engine "computes" the per-channel spatial mean of its input (what the tests' tiny ONNX models do
after global pooling), so data can be checked end to end.
"""
from __future__ import annotations

import json
import types
import weakref

import numpy as np

TENSOR_API = (8, 5)  # num_io_tensors / set_input_shape / execute_async_v3 / TensorIOMode
BINDINGS_REMOVED = (10, 0)
POOL_API = (8, 4)
MAX_OPSET = {(8, 2): 13, (8, 5): 17, (8, 6): 17, (10, 3): 20}
UNSUPPORTED = {"Unique", "BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "DFT"}


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def add(self, *call):
        self.calls.append(call)

    def names(self):
        return [c[0] for c in self.calls]

    def find(self, name):
        return [c for c in self.calls if c[0] == name]


class Strict:
    """Like a pybind11 object: only the declared attributes can be set."""

    _settable: tuple[str, ...] = ()

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._settable:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


class EnumMember:
    def __init__(self, enum, name, value):
        self.name, self.value, self._enum = name, value, enum

    def __int__(self):
        return self.value

    def __repr__(self):
        return f"{self._enum}.{self.name}"

    __str__ = __repr__

    def __eq__(self, other):
        return isinstance(other, EnumMember) and (self._enum, self.name) == (other._enum, other.name)

    def __hash__(self):
        return hash((self._enum, self.name))


def enum(name, *members):
    ns = types.SimpleNamespace()
    for i, m in enumerate(members):
        setattr(ns, m, EnumMember(name, m, i))
    return ns


def _vt(version: str) -> tuple[int, int]:
    major, minor = (int(p) for p in version.split(".")[:2])
    return major, minor


# -- network, parser --------------------------------------------------------------------------------
class FakeTensor(Strict):
    def __init__(self, trt, name, shape, dtype):
        self._trt = trt
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "dtype", dtype)
        self._range = None

    def set_dynamic_range(self, lo, hi):
        self._trt.rec.add("set_dynamic_range", self.name, lo, hi)
        if not lo < hi:
            return False
        self._range = (lo, hi)
        return True


class FakeLayer:
    def __init__(self, name, type_, outputs):
        self.name, self.type, self._outputs = name, type_, outputs

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, i):
        return self._outputs[i]


class FakeNetwork:
    def __init__(self, trt, flags):
        self.trt, self.flags = trt, flags
        self.inputs: list[FakeTensor] = []
        self.outputs: list[FakeTensor] = []
        self.layers: list[FakeLayer] = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]

    @property
    def num_outputs(self):
        return len(self.outputs)

    def get_output(self, i):
        return self.outputs[i]

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


LAYER_TYPES = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Conv": "CONVOLUTION", "Softmax": "SOFTMAX",
               "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "GlobalAveragePool": "POOLING", "ReduceMean": "REDUCE", "Gemm": "MATRIX_MULTIPLY",
               "MatMul": "MATRIX_MULTIPLY", "Flatten": "SHUFFLE", "Reshape": "SHUFFLE", "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE"}


class FakeParserError:
    def __init__(self, desc, node, op, new_api):
        self._d, self._n, self._op = desc, node, op
        if new_api:  # IParserError.node_name/node_operator: TensorRT 10
            self.node_name = lambda: self._n
            self.node_operator = lambda: self._op

    def desc(self):
        return self._d

    def node(self):
        return 0


class FakeParser:
    def __init__(self, trt, network):
        self.trt, self.network = trt, network
        self.errors: list[FakeParserError] = []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]

    def _error(self, desc, node="", op=""):
        self.errors.append(FakeParserError(desc, node, op, self.trt.vt >= (10, 0)))
        return False

    def parse_from_file(self, path):
        import onnx

        trt, net = self.trt, self.network
        trt.rec.add("parse_from_file", path)
        if trt.vt < BINDINGS_REMOVED and not (net.flags & (1 << 0)):
            return self._error("Network must have explicit batch dimensions (EXPLICIT_BATCH flag)")
        model = onnx.load(path)
        opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
        if opset > MAX_OPSET[trt.vt]:
            return self._error(f"Unsupported ONNX opset {opset} (this parser reads <= {MAX_OPSET[trt.vt]})")
        inits = {t.name for t in model.graph.initializer}
        for v in model.graph.input:
            if v.name in inits:
                continue
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim]
            net.inputs.append(FakeTensor(trt, v.name, dims, trt.onnx_dtype(v.type.tensor_type.elem_type)))
        for n in model.graph.node:
            name = n.name or n.output[0]
            if n.op_type in UNSUPPORTED:
                return self._error(f"No importer registered for op: {n.op_type}", name, n.op_type)
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and trt.vt < (8, 6) and not (len(n.input) == 3 and n.input[2]):
                return self._error("This version of TensorRT requires 3 inputs for the DequantizeLinear operator.", name, n.op_type)
            outs = [FakeTensor(trt, o, (), trt.DataType.FLOAT) for o in n.output]
            net.layers.append(FakeLayer(name, EnumMember("LayerType", LAYER_TYPES.get(n.op_type, "UNARY"), 0), outs))
        for v in model.graph.output:
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim]
            net.outputs.append(FakeTensor(trt, v.name, dims, trt.onnx_dtype(v.type.tensor_type.elem_type)))
        return True


# -- builder ------------------------------------------------------------------------------------------
class FakeTimingCache:
    def __init__(self, tag, data):
        self.tag, self.data = tag, data

    def serialize(self):
        return memoryview(f"TC|{self.tag}|".encode() + self.data)


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, mn, opt, mx):
        self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))


class FakeConfig(Strict):
    def __init__(self, trt):
        self._trt = trt
        self._settable = ("default_device_type", "DLA_core", "int8_calibrator") + (("max_workspace_size",) if trt.vt < BINDINGS_REMOVED else ())
        object.__setattr__(self, "default_device_type", trt.DeviceType.GPU)
        object.__setattr__(self, "DLA_core", -1)
        self._flags, self._cache, self._profiles, self._pool = set(), None, [], None
        if trt.vt >= POOL_API:
            object.__setattr__(self, "set_memory_pool_limit", self._set_pool)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if not name.startswith("_"):
            self._trt.rec.add("config." + name, value)

    def _set_pool(self, pool, size):
        self._trt.rec.add("set_memory_pool_limit", pool, size)
        self._pool = size

    def set_flag(self, flag):
        self._trt.rec.add("set_flag", flag)
        self._flags.add(flag)

    def create_timing_cache(self, data):
        data = bytes(data)
        self._trt.rec.add("create_timing_cache", data)
        if not data:
            return FakeTimingCache(self._trt.device_tag, b"")
        if not data.startswith(b"TC|"):
            return None  # TensorRT logs an error and returns nullptr for bytes it cannot read
        tag, _, rest = data[3:].partition(b"|")
        return FakeTimingCache(tag.decode(), rest)

    def set_timing_cache(self, cache, ignore_mismatch):
        self._trt.rec.add("set_timing_cache", ignore_mismatch)
        if cache.tag != self._trt.device_tag and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache

    def add_optimization_profile(self, profile):
        self._trt.rec.add("add_optimization_profile", profile.shapes)
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def can_run_on_DLA(self, layer):
        return layer.type.name not in ("QUANTIZE", "DEQUANTIZE") and layer.type.name not in self._trt.dla_unsupported


class FakeBuilder:
    def __init__(self, trt, logger):
        self.trt = trt
        self.platform_has_fast_fp16 = trt.fast_fp16
        self.platform_has_fast_int8 = trt.fast_int8
        self.num_DLA_cores = trt.dla_cores

    def create_network(self, flags):
        self.trt.rec.add("create_network", flags)
        return FakeNetwork(self.trt, flags)

    def create_builder_config(self):
        return FakeConfig(self.trt)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        trt = self.trt
        trt.rec.add("build_serialized_network")
        qdq = [layer for layer in network.layers if layer.type.name in ("QUANTIZE", "DEQUANTIZE")]
        on_dla = config.default_device_type == trt.DeviceType.DLA
        if qdq and on_dla:
            trt.log("DLA does not support explicit quantization (Q/DQ layers); use implicit INT8")
            return None
        if qdq and trt.BuilderFlag.INT8 not in config._flags:
            trt.log("Q/DQ layers need the INT8 builder flag")
            return None
        profile = config._profiles[0].shapes if config._profiles else {}
        for t in network.inputs:
            if any(d < 0 for d in t.shape) and t.name not in profile:
                trt.log(f"Network has dynamic or shape inputs, but no optimization profile has been defined ({t.name})")
                return None
        if trt.fail_build:
            return None
        io = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name, "input": True} for t in network.inputs]
        io += [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name, "input": False} for t in network.outputs]
        desc = {"trt": trt.__version__, "io": io, "profile": {k: [list(s) for s in v] for k, v in profile.items()},
                "dla": config.DLA_core if on_dla else None, "ranges": sum(1 for t in network.inputs if t._range is not None)}
        return memoryview(b"FAKEENGINE" + json.dumps(desc).encode())


# -- runtime ------------------------------------------------------------------------------------------
class FakeEngine:
    def __init__(self, trt, runtime, desc):
        self.trt, self.desc = trt, desc
        self._runtime = runtime  # pybind keep_alive: the runtime outlives its engines
        self.io = desc["io"]
        weakref.finalize(self, _check_cuda_context, trt, trt.current_context(), "engine")
        api = self.trt.vt
        if api >= TENSOR_API:
            self.num_io_tensors = len(self.io)
        if api < BINDINGS_REMOVED:
            self.num_bindings = len(self.io)

    def _t(self, name):
        return next(t for t in self.io if t["name"] == name)

    def __getattr__(self, name):
        tensor = ("get_tensor_name", "get_tensor_shape", "get_tensor_dtype", "get_tensor_mode")
        bindings = ("get_binding_name", "get_binding_shape", "get_binding_dtype", "binding_is_input")
        if name in tensor and self.trt.vt >= TENSOR_API:
            return getattr(self, "_" + name)
        if name in bindings and self.trt.vt < BINDINGS_REMOVED:
            return getattr(self, "_" + name)
        raise AttributeError(f"'tensorrt.ICudaEngine' object has no attribute '{name}'")

    def _dtype(self, t):
        return getattr(self.trt.DataType, t["dtype"])

    def _get_tensor_name(self, i):
        return self.io[i]["name"]

    def _get_tensor_shape(self, name):
        return tuple(self._t(name)["shape"])

    def _get_tensor_dtype(self, name):
        return self._dtype(self._t(name))

    def _get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if self._t(name)["input"] else self.trt.TensorIOMode.OUTPUT

    def _get_binding_name(self, i):
        return self.io[i]["name"]

    def _get_binding_shape(self, i):
        return tuple(self.io[i]["shape"])

    def _get_binding_dtype(self, i):
        return self._dtype(self.io[i])

    def _binding_is_input(self, i):
        return self.io[i]["input"]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine):
        self._engine, self.trt = engine, engine.trt  # keep_alive: the engine outlives its contexts
        weakref.finalize(self, _check_cuda_context, self.trt, self.trt.current_context(), "execution context")
        self._shapes = {t["name"]: list(t["shape"]) for t in engine.io}
        self._addr: dict[str, int] = {}

    def __getattr__(self, name):
        v3 = ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3")
        v2 = ("set_binding_shape", "get_binding_shape", "execute_async_v2")
        if name in v3 and self.trt.vt >= TENSOR_API:
            return getattr(self, "_" + name)
        if name in v2 and self.trt.vt < BINDINGS_REMOVED:
            return getattr(self, "_" + name)
        raise AttributeError(f"'tensorrt.IExecutionContext' object has no attribute '{name}'")

    def _set_shape(self, name, shape):
        self.trt.rec.add("set_input_shape", name, tuple(shape))
        lo, _, hi = self._engine.desc["profile"].get(name, [self._shapes[name]] * 3)
        if len(shape) != len(lo) or any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
            return False
        self._shapes[name] = list(shape)
        batch = shape[0]
        for t in self._engine.io:  # the fake's outputs follow the batch
            if not t["input"]:
                self._shapes[t["name"]] = [batch if d < 0 else d for d in t["shape"]]
        return True

    def _set_input_shape(self, name, shape):
        return self._set_shape(name, shape)

    def _set_binding_shape(self, i, shape):
        return self._set_shape(self._engine.io[i]["name"], shape)

    def _get_tensor_shape(self, name):
        return tuple(self._shapes[name])

    def _get_binding_shape(self, i):
        return tuple(self._shapes[self._engine.io[i]["name"]])

    def _set_tensor_address(self, name, ptr):
        self.trt.rec.add("set_tensor_address", name)
        self._addr[name] = int(ptr)
        return True

    def _compute(self, addr):
        if any(d < 0 for s in self._shapes.values() for d in s):
            self.trt.log("not all input shapes are specified")
            return False
        ins = [t for t in self._engine.io if t["input"]]
        outs = [t for t in self._engine.io if not t["input"]]
        if set(addr) != {t["name"] for t in self._engine.io}:
            self.trt.log("tensor address not set for every I/O tensor")
            return False
        x_t = ins[0]
        x = FakeMem.registry[addr[x_t["name"]]].read(np.dtype(TRT_NP[x_t["dtype"]]), self._shapes[x_t["name"]])
        y = x.astype(np.float64).reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
        for o in outs:
            FakeMem.registry[addr[o["name"]]].write(y.astype(TRT_NP[o["dtype"]]).reshape(self._shapes[o["name"]]))
        return True

    def _execute_async_v3(self, stream_handle):
        self.trt.rec.add("execute_async_v3", stream_handle)
        return self._compute(self._addr)

    def _execute_async_v2(self, bindings, stream_handle):
        self.trt.rec.add("execute_async_v2", stream_handle)
        return self._compute({t["name"]: int(b) for t, b in zip(self._engine.io, bindings)})


class FakeRuntime(Strict):
    _settable = ("DLA_core",)

    def __init__(self, trt, logger):
        self._trt = trt
        object.__setattr__(self, "DLA_core", -1)

    def deserialize_cuda_engine(self, blob):
        blob = bytes(blob)
        self._trt.rec.add("deserialize", blob)
        if not blob.startswith(b"FAKEENGINE"):
            self._trt.log("engine plan file is not compatible with this version of TensorRT")
            return None
        desc = json.loads(blob[len(b"FAKEENGINE"):])
        if desc["trt"] != self._trt.__version__:
            self._trt.log(f"serialized engine built by TensorRT {desc['trt']}, this is {self._trt.__version__}")
            return None
        if self._trt.current_context() is None and self._trt.needs_cuda_context:
            raise RuntimeError("[TRT] CUDA initialization failure: no current CUDA context")
        return FakeEngine(self._trt, self, desc)


def _check_cuda_context(trt, ctx, what):
    """TensorRT frees an engine's/context's device memory in its destructor: the CUDA context it was
    created in must still exist and be current then."""
    if ctx is None:
        return
    if ctx.detached or trt.current_context() is not ctx:
        trt.errors.append(f"{what} destroyed without its CUDA context current")


TRT_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def fake_tensorrt(version="10.3.0", fast_fp16=True, fast_int8=True, dla_cores=0, device_tag="orin", dla_unsupported=(), fail_build=False):
    """A ``tensorrt`` module as NVIDIA's bindings of ``version`` expose it."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.vt = _vt(version)
    trt.rec, trt.errors, trt.messages = Recorder(), [], []
    trt.fast_fp16, trt.fast_int8, trt.dla_cores = fast_fp16, fast_int8, dla_cores
    trt.device_tag, trt.dla_unsupported, trt.fail_build = device_tag, set(dla_unsupported), fail_build
    trt.log = trt.messages.append
    trt.current_context, trt.needs_cuda_context = (lambda: None), False  # install() links pycuda's context stack
    dtypes = ["FLOAT", "HALF", "INT8", "INT32", "BOOL"] + (["UINT8"] if trt.vt >= (8, 5) else []) + (["INT64", "BF16", "FP8"] if trt.vt >= (10, 0) else [])
    trt.DataType = enum("DataType", *dtypes)

    def onnx_dtype(elem_type):
        from onnx import TensorProto

        name = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT8: "INT8", TensorProto.INT32: "INT32",
                TensorProto.INT64: "INT64" if trt.vt >= (10, 0) else "INT32",  # 8.x casts INT64 down to INT32
                TensorProto.BOOL: "BOOL", TensorProto.UINT8: "UINT8"}[elem_type]
        return getattr(trt.DataType, name)

    trt.onnx_dtype = onnx_dtype

    class Logger:
        WARNING, VERBOSE, ERROR = "WARNING", "VERBOSE", "ERROR"

        def __init__(self, level):
            trt.rec.add("Logger", level)

    trt.Logger = Logger
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.Runtime = lambda logger: FakeRuntime(trt, logger)
    trt.OnnxParser = lambda network, logger: FakeParser(trt, network)
    if trt.vt >= POOL_API:
        trt.MemoryPoolType = enum("MemoryPoolType", "WORKSPACE", "DLA_MANAGED_SRAM")
    trt.BuilderFlag = enum("BuilderFlag", "FP16", "INT8", "DEBUG", "GPU_FALLBACK")
    trt.DeviceType = enum("DeviceType", "GPU", "DLA")
    trt.NetworkDefinitionCreationFlag = enum("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH")
    if trt.vt >= TENSOR_API:
        trt.TensorIOMode = enum("TensorIOMode", "NONE", "INPUT", "OUTPUT")

    def nptype(dt):
        if trt.vt < (10, 0):  # the 8.x mapping dict holds np.bool: AttributeError on NumPy 1.24–1.26
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return TRT_NP[dt.name]

    trt.nptype = nptype
    return trt


# -- pycuda -------------------------------------------------------------------------------------------
class FakeMem:
    registry: dict[int, FakeMem] = {}

    def __init__(self, cuda, nbytes):
        self.cuda, self.buf, self.freed = cuda, np.zeros(nbytes, np.uint8), False
        self.ctx = cuda.current()
        self.ctx.live.add(self)
        FakeMem.registry[id(self)] = self

    def __int__(self):
        return id(self)

    def read(self, dtype, shape):
        return np.frombuffer(self.buf.tobytes(), dtype)[: int(np.prod(shape))].reshape(shape)

    def write(self, arr):
        self.buf = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8).copy()

    def free(self):
        if self.cuda.current() is not self.ctx:
            self.cuda.errors.append("device memory freed without its context current")
        self.freed = True
        self.ctx.live.discard(self)


def fake_pycuda(sm_count=8, cc=(8, 7), name="Orin (nvgpu)", driver=12060, device_count=1):
    """A ``pycuda.driver`` module: a context stack, streams/memory bound to the current context."""
    cuda = types.ModuleType("pycuda.driver")
    cuda.errors, cuda.log, cuda.stack = [], [], []

    class Error(Exception):
        pass

    cuda.Error = Error
    cuda.current = lambda: cuda.stack[-1] if cuda.stack else None

    class Context:
        def __init__(self):
            self.live: set = set()
            self.detached = False

        def push(self):
            cuda.log.append("push")
            cuda.stack.append(self)

        def pop(self):
            cuda.log.append("pop")
            if cuda.current() is not self:
                cuda.errors.append("pop of a context that is not current")
            else:
                cuda.stack.pop()

        def detach(self):
            cuda.log.append("detach")
            if self.live:
                cuda.errors.append(f"context detached with {len(self.live)} live allocation(s)/stream(s)")
            self.detached = True

    cuda.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")

    class Device:
        def __init__(self, i):
            if i >= device_count:
                raise Error(f"invalid device ordinal {i}")
            self.i = i

        def compute_capability(self):
            return cc

        def name(self):
            return name

        def get_attribute(self, attr):
            assert attr == "MULTIPROCESSOR_COUNT"
            return sm_count

        def make_context(self):
            cuda.log.append("make_context")
            ctx = Context()
            cuda.stack.append(ctx)
            return ctx

    class Stream:
        handle = 1234

        def synchronize(self):
            cuda.log.append("synchronize")

    def make_stream():
        ctx = cuda.current()
        if ctx is None:
            raise Error("no current context")
        s, tag = Stream(), object()  # liveness by a tag: the stream itself in ctx.live would never die
        ctx.live.add(tag)
        weakref.finalize(s, _released, ctx, tag, "stream destroyed")
        return s

    def _released(ctx, tag, what):
        if cuda.current() is not ctx:
            cuda.errors.append(f"{what} without its context current")
        ctx.live.discard(tag)

    cuda.Stream = make_stream

    def pagelocked_empty(shape, dtype):
        ctx = cuda.current()
        if ctx is None:
            raise Error("no current context")
        cuda.log.append(("pagelocked_empty", tuple(shape)))
        arr, tag = np.empty(shape, dtype), object()
        ctx.live.add(tag)
        weakref.finalize(arr, _released, ctx, tag, "page-locked memory freed")
        return arr

    def htod(dst, src, stream):
        cuda.log.append("htod")
        dst.write(src)

    def dtoh(dst, src, stream):
        cuda.log.append("dtoh")
        dst[...] = src.read(dst.dtype, dst.shape)

    cuda.init = lambda: cuda.log.append("init")
    cuda.Device = Device
    cuda.get_driver_version = lambda: driver
    cuda.pagelocked_empty = pagelocked_empty
    cuda.mem_alloc = lambda nbytes: FakeMem(cuda, nbytes)
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = htod, dtoh
    return cuda


def install(monkeypatch, trt=None, cuda=None):
    """Put the fakes in sys.modules (``import tensorrt`` / ``import pycuda.driver`` find them)."""
    import sys

    if trt is not None:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if trt is not None and cuda is not None:
        trt.current_context, trt.needs_cuda_context = cuda.current, True
    if cuda is not None:
        pkg = types.ModuleType("pycuda")
        pkg.driver = cuda
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)


def hide_device_files(monkeypatch, root) -> None:
    """This host has no Jetson files (device tree, CUDA home, /etc/nv_tegra_release): the device facts
    then come from the fakes alone, whatever machine runs the tests."""
    from edgefg.tensorrt import device as dev

    empty = root / "no-device-files"
    monkeypatch.setattr("edgefg.tensorrt.cache.TEGRA_RELEASE", empty / "nv_tegra_release")
    real = dev.SystemPaths
    monkeypatch.setattr(dev, "SystemPaths", lambda **kw: real(device_tree=empty, cuda_home=empty, tegra_release=empty / "x"))


def fake_device(monkeypatch, root, version: str = "10.3.0", pycuda: dict | None = None, **trt_options):
    """The one fake TensorRT device: no device files, fake tensorrt ``version`` + pycuda installed. Returns (trt, cuda)."""
    hide_device_files(monkeypatch, root)
    trt, cuda = fake_tensorrt(version, **trt_options), fake_pycuda(**(pycuda or {}))
    install(monkeypatch, trt, cuda)
    return trt, cuda
