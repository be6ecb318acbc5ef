"""TFLite / LiteRT backend: ``ai_edge_litert`` (or the older ``tflite_runtime``) with XNNPACK.

The interpreter's default op resolver applies the XNNPACK delegate on CPU; ``num_threads`` sets
its thread pool. Integer (int8/uint8) inputs arrive already quantized by the one preprocessing
function (the manifest carries scale/zero point); integer outputs are dequantized by the base
class from each output's own ``quant_*``. A model with a second output (``deploy --embedding``)
returns its outputs by the names the manifest records (read from the file's signature).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import TensorSpec, guess_layout
from edgefg.progress import native_logs_silenced
from edgefg.runtime.backends.base import Backend

try:
    from ai_edge_litert.interpreter import Interpreter

    ENGINE = "ai_edge_litert"
except ModuleNotFoundError:  # pragma: no cover - depends on the install (old devices)
    try:
        from tflite_runtime.interpreter import Interpreter

        ENGINE = "tflite_runtime"
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("ai_edge_litert", "runtime-tflite") from None


def open_interpreter(path: str, num_threads: int | None = None) -> Any:
    """An allocated interpreter for ``path``; a typed error for a file LiteRT cannot read."""
    try:
        with native_logs_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(
            f"LiteRT cannot load '{path}': {first}",
            "check that the file is a complete .tflite model (re-copy or re-deploy it)",
        ) from None
    return interpreter


@dataclass
class TFLiteInfo:
    """What a .tflite file says about itself (read from the file, never assumed)."""

    input: TensorSpec
    outputs: list[TensorSpec]  # in the signature's order (litert-torch: output_0, output_1, ...)
    layout: str | None  # NHWC | NCHW | None when the shape does not tell (e.g. 1×3×H×3)
    precision: str  # int8 (quantized tensors) | fp16 (float16 weights) | fp32
    ops: dict[str, int] = field(default_factory=dict)  # op name -> count, before delegation
    output_op: str | None = None  # the op that produces the first output (SOFTMAX → probabilities)

    @property
    def output(self) -> TensorSpec:
        """The scores output (the first)."""
        return self.outputs[0]


def _spec(detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero = detail.get("quantization") or (0.0, 0)
    quantized = dtype in ("int8", "uint8", "int16") and scale
    return TensorSpec(
        detail["name"],
        [int(d) for d in detail["shape"]],
        dtype,
        float(scale) if quantized else None,
        int(zero) if quantized else None,
    )


def ordered_outputs(interpreter: Any) -> list[dict[str, Any]]:
    """The output details in the order of the model's (first) signature — litert-torch names them
    ``output_0``, ``output_1``… in the order the PyTorch module returns them, while
    ``get_output_details()`` follows tensor indices; without a signature, the details' order."""
    details = interpreter.get_output_details()
    try:
        signatures = interpreter.get_signature_list()
    except (AttributeError, ValueError, RuntimeError):  # pragma: no cover - older runtimes
        signatures = {}
    if not signatures:
        return details
    key = next(iter(signatures))
    by_name = interpreter.get_signature_runner(key).get_output_details()
    names = [n for n in signatures[key].get("outputs", []) if n in by_name]
    if len(names) != len(details):
        return details
    index = {d["index"]: d for d in details}
    picked = [index[by_name[n]["index"]] for n in names if by_name[n]["index"] in index]
    return picked if len(picked) == len(details) else details


def inspect_tflite(path: str, max_outputs: int = 1) -> TFLiteInfo:
    """Read I/O specs, quantization, layout, precision and the op list of a .tflite file; up to
    ``max_outputs`` outputs (scores first; deploy --embedding writes two)."""
    try:
        from ai_edge_litert.interpreter import OpResolverType

        kwargs: dict[str, Any] = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    except ImportError:  # pragma: no cover - tflite_runtime
        kwargs = {}
    try:
        interpreter = Interpreter(model_path=str(path), **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(f"'{path}' is not a readable .tflite model: {first}", "check the file (re-copy or re-convert it)") from None
    inputs, outputs = interpreter.get_input_details(), ordered_outputs(interpreter)
    if len(inputs) != 1 or not 1 <= len(outputs) <= max_outputs:
        raise UnsupportedError(
            f"'{path}' has {len(inputs)} inputs and {len(outputs)} outputs",
            "edgefg runs image classifiers with one image input and one score output",
        )
    inp, outs = _spec(inputs[0]), [_spec(o) for o in outputs]
    shape = inp.shape
    if len(shape) != 4:
        raise UnsupportedError(f"'{path}' input has shape {shape}; an image classifier takes N×H×W×C or N×C×H×W")
    layout = guess_layout(shape)
    tensors = interpreter.get_tensor_details()
    dtypes = {np.dtype(t["dtype"]).name for t in tensors}
    quantized = any(np.dtype(t["dtype"]).name in ("int8", "uint8") and (t.get("quantization") or (0, 0))[0] for t in tensors)
    precision = "int8" if quantized else "fp16" if "float16" in dtypes else "fp32"
    ops: dict[str, int] = {}
    output_op = None
    try:
        for op in interpreter._get_ops_details():  # no public op list in LiteRT's Python API
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
            if outputs[0]["index"] in list(op["outputs"]):
                output_op = op["op_name"]
    except AttributeError:  # pragma: no cover - older runtimes
        pass
    return TFLiteInfo(inp, outs, layout, precision, ops, output_op)


class TFLiteBackend(Backend):
    name = "tflite"
    engine_module = ENGINE

    def __init__(self, model_path, manifest, num_threads=None, **options: Any):
        super().__init__(model_path, manifest, num_threads, **options)
        self.interpreter = open_interpreter(str(self.model_path), self.num_threads)
        self._in = self.interpreter.get_input_details()[0]
        details = ordered_outputs(self.interpreter)
        by_name = {d["name"]: d for d in details}  # the manifest's outputs by name, else by position
        picked = [by_name.get(o.name, details[i] if i < len(details) else None) for i, o in enumerate(manifest.outputs)]
        if not picked or any(d is None for d in picked):
            raise ModelLoadError(f"'{self.model_path}' has {len(details)} output(s), the manifest lists {len(manifest.outputs)}",
                                 "re-deploy the bundle (its model and manifest do not match)")
        self._outs: list[dict[str, Any]] = [d for d in picked if d is not None]
        self._out = self._outs[0]
        self._in_shape = tuple(int(d) for d in self._in["shape"])

    @property
    def static_batch(self) -> int | None:
        # TFLite models converted from PyTorch have a fixed batch (1); resize_tensor_input is not
        # used because XNNPACK re-plans on every resize.
        return self._in_shape[0]

    def _invoke(self, batch: np.ndarray) -> None:
        if tuple(batch.shape) != self._in_shape:
            raise UnsupportedError(
                f"the model takes input of shape {list(self._in_shape)}, got {list(batch.shape)}",
                "prepare inputs with the bundle's manifest (layout and input size)",
            )
        self.interpreter.set_tensor(self._in["index"], batch)
        self.interpreter.invoke()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._invoke(batch)
        return self.interpreter.get_tensor(self._out["index"]).copy()

    def _run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output the manifest lists (scores, embedding), by name, from one invoke."""
        self._invoke(batch)
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self._outs]

    def close(self) -> None:
        self.interpreter = None
