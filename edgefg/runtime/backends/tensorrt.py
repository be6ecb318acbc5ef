"""TensorRT backend (tensorrt + pycuda): runs the engine that ``edgefg build-engine`` built on this
device, found through the engine cache key — an engine from another TensorRT/GPU/JetPack is
refused, never deserialised.

One CUDA stream, page-locked host buffers and device buffers sized from the manifest's (static)
I/O shapes and checked against the engine, async H2D → execute → D2H, one synchronise. TensorRT
8.5+/10 name-based tensor API (``set_tensor_address`` + ``execute_async_v3``), with the bindings API
(``execute_async_v2``) for older engines (TensorRT 8.2 on Jetson Nano).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import Manifest, TensorSpec
from edgefg.runtime.backends.base import Backend

DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


@dataclass
class BufferSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


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
    """The engine's own I/O tensors (TensorRT 8.5+/10 tensor API, else 8.x bindings)."""
    out = []
    if hasattr(engine, "num_io_tensors"):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            out.append(BufferSpec(name, tuple(int(d) for d in engine.get_tensor_shape(name)), np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                                  engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
    else:
        for i in range(engine.num_bindings):
            out.append(BufferSpec(engine.get_binding_name(i), tuple(int(d) for d in engine.get_binding_shape(i)),
                                  np.dtype(trt.nptype(engine.get_binding_dtype(i))), bool(engine.binding_is_input(i))))
    return out


def check_io(expected: list[BufferSpec], actual: list[BufferSpec]) -> None:
    """The engine must have exactly the manifest's tensors and shapes (a wrong engine is refused)."""
    have = {b.name: b for b in actual}
    for e in expected:
        a = have.get(e.name)
        if a is None:
            raise ModelLoadError(f"the engine has no tensor '{e.name}' (it has: {', '.join(have)})", "rebuild it: edgefg build-engine BUNDLE --force")
        if a.shape != e.shape or a.is_input != e.is_input:
            raise ModelLoadError(f"engine tensor '{e.name}' is {a.shape}, the manifest says {e.shape}", "rebuild it: edgefg build-engine BUNDLE --force")


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


class TensorRTBackend(Backend):
    name = "tensorrt"
    engine_module = "tensorrt"

    def __init__(self, model_path, manifest, num_threads=None, **options: Any):
        super().__init__(model_path, manifest, num_threads, **options)
        from edgefg.tensorrt.builder import import_tensorrt
        from edgefg.tensorrt.cache import EngineCache, detect_device, engine_dir, engine_key

        self.specs = buffer_specs(manifest)  # before any CUDA work: a bad manifest fails fast
        trt = import_tensorrt()
        device = cuda_device(int(self.options.get("device_id", 0)))
        import pycuda.driver as cuda

        self._trt, self._cuda = trt, cuda
        bundle = self.model_path.parent
        dla = self.options.get("dla_core")
        cache = EngineCache(engine_dir(bundle, manifest, self.options.get("engine_cache")))
        key = cache.resolve(engine_key(manifest, detect_device(trt, device), None if dla is None else int(dla)))
        blob = cache.load(key, bundle)
        dla = key.dla_core
        self.engine_key = key
        self._ctx = device.make_context()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            if dla is not None:
                self._runtime.DLA_core = int(dla)
            self.engine = self._runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                raise ModelLoadError("TensorRT could not deserialise the engine", f"rebuild it: edgefg build-engine {bundle} --force")
            actual = engine_io(trt, self.engine)
            check_io(self.specs, actual)
            known = {s.name for s in self.specs}
            extra = [a for a in actual if a.name not in known]
            if any(a.is_input for a in extra):
                raise ModelLoadError(f"the engine has inputs the manifest does not describe: {', '.join(a.name for a in extra if a.is_input)}", f"rebuild it: edgefg build-engine {bundle} --force")
            self.specs += extra  # further outputs: bound (TensorRT writes them), not returned
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self.host = {s.name: cuda.pagelocked_empty(s.shape, s.dtype) for s in self.specs}
            self.device_mem = {s.name: cuda.mem_alloc(s.nbytes) for s in self.specs}
            self._v3 = hasattr(self.context, "execute_async_v3")
            if self._v3:
                for s in self.specs:
                    self.context.set_tensor_address(s.name, int(self.device_mem[s.name]))
            else:
                order = [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)]
                self._bindings = [int(self.device_mem[n]) for n in order]
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            raise
        self._ctx.pop()
        self._inputs = [s for s in self.specs if s.is_input]
        self._outputs = [s for s in self.specs if not s.is_input]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cuda, spec = self._cuda, self._inputs[0]
        if tuple(batch.shape) != spec.shape:
            raise UnsupportedError(f"the engine takes {spec.shape}, got {tuple(batch.shape)}")
        self._ctx.push()
        try:
            np.copyto(self.host[spec.name], batch, casting="same_kind")
            cuda.memcpy_htod_async(self.device_mem[spec.name], self.host[spec.name], self.stream)
            if self._v3:
                ok = self.context.execute_async_v3(stream_handle=self.stream.handle)
            else:
                ok = self.context.execute_async_v2(bindings=self._bindings, stream_handle=self.stream.handle)
            for out in self._outputs:
                cuda.memcpy_dtoh_async(self.host[out.name], self.device_mem[out.name], self.stream)
            self.stream.synchronize()
        finally:
            self._ctx.pop()
        if not ok:
            raise ModelLoadError("TensorRT failed to run the engine", "check the device log (dmesg) and rebuild the engine")
        return self.host[self._outputs[0].name].copy()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            for mem in getattr(self, "device_mem", {}).values():
                mem.free()
            self.device_mem, self.host, self.context, self.engine = {}, {}, None, None
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
