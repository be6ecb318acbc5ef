"""TensorRT backend (tensorrt + pycuda): runs the engine that ``edgefg build-engine`` built on this
device, found through the engine cache key — an engine from another TensorRT/GPU/CUDA/JetPack is
refused, never deserialised.

One CUDA stream, page-locked host buffers and device buffers, async H2D → execute → D2H, one
synchronise. TensorRT 8.5+/10 name-based tensor API (``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``), with the bindings API (``set_binding_shape`` / ``execute_async_v2``) for
TensorRT 8.2 (Jetson Nano). An engine built with an optimization profile reports -1 dimensions:
the input shapes are set on the execution context and the output shapes read back from it, then
checked against the manifest. TensorRT data types are mapped to NumPy here (``trt.nptype`` of 8.5
uses ``np.bool``, absent from NumPy 1.24–1.26).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import Manifest, TensorSpec
from edgefg.runtime.backends.base import Backend
from edgefg.tensorrt.builder import import_tensorrt
from edgefg.tensorrt.cache import EngineCache, detect_device, engine_dir, engine_key

DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int32": np.int32, "int64": np.int64, "bool": np.bool_}
# tensorrt.DataType member name → NumPy (BF16/FP8/INT4 have no NumPy type: refused)
TRT_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """NumPy dtype of a ``tensorrt.DataType`` (by member name; not ``trt.nptype``)."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TRT_DTYPES:
        raise UnsupportedError(f"engine tensor type {name} has no NumPy equivalent here", "export the model with float32/float16 I/O")
    return np.dtype(TRT_DTYPES[name])


@dataclass
class BufferSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)


def _static_shape(spec: TensorSpec, batch: int | None) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif i == 0 and batch:
            dims.append(int(batch))
        else:
            raise UnsupportedError(
                f"tensor '{spec.name}' has a dynamic dimension {d!r}; TensorRT bundles need static shapes",
                "re-deploy for a Jetson target (it fixes the batch)",
            )
    return tuple(dims)


def buffer_specs(manifest: Manifest) -> list[BufferSpec]:
    """Host/device buffer sizes for every engine input and output, from the manifest alone."""
    batch = manifest.backend_options.get("engine", {}).get("batch")
    out = []
    for specs, is_input in ((manifest.inputs, True), (manifest.outputs, False)):
        for s in specs:
            if s.dtype not in DTYPES:
                raise UnsupportedError(f"tensor '{s.name}' has dtype {s.dtype}, which the TensorRT backend does not handle")
            out.append(BufferSpec(s.name, _static_shape(s, batch), np.dtype(DTYPES[s.dtype]), is_input))
    return out


def engine_io(trt: Any, engine: Any) -> list[BufferSpec]:
    """The engine's own I/O tensors as the engine reports them (-1 for profile dimensions)."""
    out = []
    if hasattr(engine, "num_io_tensors"):  # TensorRT >= 8.5
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            out.append(BufferSpec(name, tuple(int(d) for d in engine.get_tensor_shape(name)), numpy_dtype(engine.get_tensor_dtype(name)),
                                  engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
    else:  # TensorRT 8.2
        for i in range(engine.num_bindings):
            out.append(BufferSpec(engine.get_binding_name(i), tuple(int(d) for d in engine.get_binding_shape(i)),
                                  numpy_dtype(engine.get_binding_dtype(i)), bool(engine.binding_is_input(i))))
    return out


def resolve_shapes(engine: Any, context: Any, actual: list[BufferSpec], expected: list[BufferSpec]) -> list[BufferSpec]:
    """Set every dynamic input to the manifest's shape on ``context`` and read all shapes back from it."""
    want = {e.name: e for e in expected}
    tensor_api = hasattr(context, "set_input_shape")
    names = [a.name for a in actual]
    for a in actual:
        if not (a.is_input and a.dynamic):
            continue
        shape = want[a.name].shape if a.name in want else None
        if shape is None:
            raise ModelLoadError(f"engine input '{a.name}' has dynamic shape {a.shape} and the manifest gives none", "rebuild with a static ONNX")
        ok = context.set_input_shape(a.name, shape) if tensor_api else context.set_binding_shape(names.index(a.name), shape)
        if not ok:
            raise ModelLoadError(f"the engine's optimization profile does not allow shape {shape} for input '{a.name}'",
                                 "rebuild it: edgefg build-engine BUNDLE --force")
    if not any(a.dynamic for a in actual):
        return actual
    out = []
    for i, a in enumerate(actual):
        shape = tuple(int(d) for d in (context.get_tensor_shape(a.name) if tensor_api else context.get_binding_shape(i)))
        if any(d < 0 for d in shape):
            raise UnsupportedError(f"engine tensor '{a.name}' keeps a data-dependent shape {shape}", "export a model whose output shapes follow from its input shapes")
        out.append(replace(a, shape=shape))
    return out


def io_dtype_allowed(expected: np.dtype, actual: np.dtype, trt_major: int) -> bool:
    """Same dtype; or INT64 in the model that TensorRT 8.x turned into INT32 (8.x has no INT64 I/O)."""
    return expected == actual or (trt_major < 10 and expected == np.int64 and actual == np.int32)


def check_io(expected: list[BufferSpec], actual: list[BufferSpec], trt_major: int = 10) -> None:
    """The engine must have exactly the manifest's tensors, shapes and dtypes (a wrong engine is refused)."""
    have = {b.name: b for b in actual}
    for e in expected:
        a = have.get(e.name)
        if a is None:
            raise ModelLoadError(f"the engine has no tensor '{e.name}' (it has: {', '.join(have)})", "rebuild it: edgefg build-engine BUNDLE --force")
        if a.shape != e.shape or a.is_input != e.is_input:
            raise ModelLoadError(f"engine tensor '{e.name}' is {a.shape}, the manifest says {e.shape}", "rebuild it: edgefg build-engine BUNDLE --force")
        if not io_dtype_allowed(np.dtype(e.dtype), np.dtype(a.dtype), trt_major):
            raise ModelLoadError(f"engine tensor '{e.name}' is {np.dtype(a.dtype)}, the manifest says {np.dtype(e.dtype)}",
                                 "rebuild it from the bundle's ONNX: edgefg build-engine BUNDLE --force")


def cuda_device(index: int = 0) -> Any:
    try:
        import pycuda.driver as cuda
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("pycuda", "runtime-tensorrt") from None
    try:
        cuda.init()
        return cuda.Device(index)
    except cuda.Error as exc:
        raise UnsupportedError(f"no CUDA device {index} here ({exc})", "run on the Jetson/GPU the bundle was built for") from None


class EngineSession:
    """A deserialised engine with its context, stream and buffers on one CUDA context.

    ``expected`` (the manifest's tensors) fixes dynamic input shapes and is checked against the
    engine; further engine outputs are bound (TensorRT writes them) but not returned."""

    def __init__(self, trt: Any, cuda: Any, device: Any, blob: bytes, expected: list[BufferSpec], dla_core: int | None = None,
                 rebuild_hint: str = "rebuild it: edgefg build-engine BUNDLE --force") -> None:
        self._trt, self._cuda = trt, cuda
        self._ctx = device.make_context()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            if dla_core is not None:
                self._runtime.DLA_core = int(dla_core)
            self.engine = self._runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                raise ModelLoadError("TensorRT could not deserialise the engine", rebuild_hint)
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise ModelLoadError("TensorRT could not create an execution context (out of device memory?)", rebuild_hint)
            actual = resolve_shapes(self.engine, self.context, engine_io(trt, self.engine), expected)
            check_io(expected, actual, int(str(trt.__version__).split(".")[0]))
            known = {s.name for s in expected}
            extra = [a for a in actual if a.name not in known]
            if any(a.is_input for a in extra):
                raise ModelLoadError(f"the engine has inputs the manifest does not describe: {', '.join(a.name for a in extra if a.is_input)}", rebuild_hint)
            by_name = {a.name: a for a in actual}
            self.specs = [by_name[e.name] for e in expected] + extra  # buffers in the engine's dtypes
            self.wanted = {e.name: np.dtype(e.dtype) for e in expected}
            self.stream = cuda.Stream()
            self.host = {s.name: cuda.pagelocked_empty(s.shape, s.dtype) for s in self.specs}
            self.device_mem = {s.name: cuda.mem_alloc(s.nbytes) for s in self.specs}
            self._v3 = hasattr(self.context, "execute_async_v3")
            if self._v3:
                for s in self.specs:
                    if not self.context.set_tensor_address(s.name, int(self.device_mem[s.name])):
                        raise ModelLoadError(f"TensorRT refused the device address of tensor '{s.name}'", rebuild_hint)
            else:
                order = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
                self._bindings = [int(self.device_mem[n]) for n in order]
        except BaseException:
            self._release(push=False)  # make_context left the context current
            raise
        self._ctx.pop()
        self.inputs = [s for s in self.specs if s.is_input]
        self.outputs = [s for s in self.specs if not s.is_input]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        for spec in self.inputs:
            x = feeds[spec.name]
            if tuple(x.shape) != spec.shape:
                raise UnsupportedError(f"the engine takes {spec.shape} for '{spec.name}', got {tuple(x.shape)}")
            if np.dtype(spec.dtype) == np.int32 and x.dtype == np.int64 and x.size and (x.max() > 2**31 - 1 or x.min() < -(2**31)):
                raise UnsupportedError(f"input '{spec.name}' has values outside int32, which this TensorRT 8.x engine uses for int64")
        self._ctx.push()
        try:
            for spec in self.inputs:
                np.copyto(self.host[spec.name], feeds[spec.name], casting="same_kind")
                cuda.memcpy_htod_async(self.device_mem[spec.name], self.host[spec.name], self.stream)
            if self._v3:
                ok = self.context.execute_async_v3(stream_handle=self.stream.handle)
            else:
                ok = self.context.execute_async_v2(bindings=self._bindings, stream_handle=self.stream.handle)
            for out in self.outputs:
                cuda.memcpy_dtoh_async(self.host[out.name], self.device_mem[out.name], self.stream)
            self.stream.synchronize()
        finally:
            self._ctx.pop()
        if not ok:
            raise ModelLoadError("TensorRT failed to run the engine", "check the device log (dmesg) and rebuild the engine")
        return {o.name: self.host[o.name].astype(self.wanted.get(o.name, o.dtype), copy=True) for o in self.outputs}

    def _release(self, push: bool) -> None:
        """Tear down in dependency order with the CUDA context current: finish the stream's work,
        then execution context → engine → runtime (TensorRT's documented destruction order), then
        device and page-locked memory and the stream; only then pop and detach the context."""
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        if push:
            ctx.push()
        try:
            if getattr(self, "stream", None) is not None:
                self.stream.synchronize()
            self.context = None
            self.engine = None
            self._runtime = None
            for mem in getattr(self, "device_mem", {}).values():
                mem.free()
            self.device_mem, self.host = {}, {}
            self.stream = None
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None

    def close(self) -> None:
        self._release(push=True)


class TensorRTBackend(Backend):
    name = "tensorrt"
    engine_module = "tensorrt"

    def __init__(self, model_path, manifest, num_threads=None, **options: Any):
        super().__init__(model_path, manifest, num_threads, **options)
        expected = buffer_specs(manifest)  # before any CUDA work: a bad manifest fails fast
        trt = import_tensorrt()
        index = int(self.options.get("device_id", 0))
        device = cuda_device(index)
        import pycuda.driver as cuda

        bundle = self.model_path.parent
        dla = self.options.get("dla_core")
        cache = EngineCache(engine_dir(bundle, manifest, self.options.get("engine_cache")))
        key = cache.resolve(engine_key(manifest, detect_device(trt, index=index), None if dla is None else int(dla)), exact=dla is not None)
        blob = cache.load(key, bundle)
        self.engine_key = key
        self.session = EngineSession(trt, cuda, device, blob, expected, key.dla_core, f"rebuild it: edgefg build-engine {bundle} --force")
        self.specs = self.session.specs
        self._input = self.session.inputs[0]
        self._output = self.session.outputs[0].name

    @property
    def _runtime(self) -> Any:
        return self.session._runtime

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run({self._input.name: batch})[self._output]

    def _run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output the manifest lists (scores, then e.g. the embedding of deploy --embedding), by
        tensor name, from one engine run (the engine session binds and copies back all of them)."""
        outs = self.session.run({self._input.name: batch})
        return [outs[o.name] for o in self.manifest.outputs]

    def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
            self.session = None
