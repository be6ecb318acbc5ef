"""Artifact → TFLite (.tflite) with litert-torch: FP32, FP16 weights, or full INT8 (PT2E).

litert-torch converts PyTorch, not ONNX, so the converter rebuilds the PyTorch model named in the
artifact manifest's ``source`` and checks it still matches the artifact before converting. The
measured alternative, onnx2tf from the ONNX, needs its own environment (numpy 1.x, TensorFlow)
and fails on DeiT (Flex ops); litert-torch converts the CNNs and ViTs tried (see the README).

* ``fp32``: exact conversion; ``fp16``: float16 weights (ai-edge-quantizer), float compute/IO.
* ``int8``: PT2E static quantization (symmetric int8, per-channel weights, histogram observers)
  calibrated on deploy's stratified images; int8 input and output. The artifact's NNCF INT8
  parameters are not carried over: TFLite's INT8 is recomputed from the FP32 source model.

For profiles with ``layout = "NHWC"`` the model is wrapped so that its input is N×H×W×C; the
manifest's preprocessing records that and the input/output quantization read from the file.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.converters import ConvertRequest, ConvertResult, register
from edgefg.errors import DataError, InputPathError, MissingDependencyError, ModelLoadError, TargetError, UnsupportedError
from edgefg.formats import FORMATS
from edgefg.progress import activity, native_logs_silenced, stdout_to_stderr, track

log = logging.getLogger(__name__)

# compression steps the source model + a fresh TFLite quantization reproduce; anything that
# changes weights or structure (pruning, adapters, token reduction) is not in the source model
REPRODUCIBLE_STEPS = {"int8-ptq"}
SOURCE_TOLERANCE = 1e-3  # max |torch - artifact| relative to the logit range, for FP32 artifacts
CHECK_SAMPLES = 4
CALIB_BATCH = 16


def _litert():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        with native_logs_silenced():  # TensorFlow's import-time oneDNN/absl notices
            import litert_torch
            import torch
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "litert_torch", "tflite-convert") from None
    return litert_torch, torch


def source_module(manifest: Any) -> Any:
    """Rebuild the PyTorch module the artifact was compressed from (eval mode, export-friendly)."""
    src = manifest.source or {}
    kind, path = src.get("type"), src.get("path")
    if kind == "onnx":
        raise UnsupportedError(
            "the artifact was compressed from an ONNX model; the TFLite converter (litert-torch) needs the PyTorch model",
            "compress from the PyTorch model (timm hub folder or checkpoint + --arch), or convert the ONNX to .tflite "
            "yourself and wrap it: edgefg deploy model.tflite --labels FILE --target ...",
        )
    if kind not in ("timm-hub", "timm-checkpoint"):
        raise UnsupportedError(f"the artifact's source model type '{kind}' cannot be rebuilt for litert-torch", "compress from a timm hub folder or checkpoint")
    if not path or not Path(path).exists():
        raise InputPathError(
            f"the artifact's source model '{path}' is gone; litert-torch converts from the PyTorch model",
            "restore the model at that path, or re-run edgefg compress from where it is now",
        )
    from edgefg.models.loader import load_model

    if kind == "timm-hub":
        loaded = load_model(path)
    else:
        loaded = load_model(path, arch=src.get("arch"), num_classes=len(manifest.labels), model_args=src.get("model_args") or {})
    if loaded.num_classes != len(manifest.labels):
        raise ModelLoadError(f"the source model '{path}' has {loaded.num_classes} outputs, the artifact {len(manifest.labels)}", "re-run edgefg compress")
    return loaded.module.eval()


def _check_source(module: Any, torch: Any, artifact_onnx: Path, manifest: Any, samples: np.ndarray | None) -> None:
    """An FP32 artifact must still equal its source model (weights edited since compress → refuse)."""
    if manifest.precision != "fp32":
        return
    import onnxruntime as ort

    h, w = manifest.preprocess.input_size
    x = samples[:CHECK_SAMPLES] if samples is not None else np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    session = ort.InferenceSession(str(artifact_onnx), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    err = float(np.abs(got - ref).max()) / max(float(np.ptp(ref)), 1e-6)
    if err > SOURCE_TOLERANCE:
        raise ModelLoadError(
            f"the source model '{manifest.source.get('path')}' no longer matches the artifact (relative difference {err:.2g})",
            "it changed after compress: re-run edgefg compress, then deploy",
        )


def _check_request(req: ConvertRequest) -> None:
    art = req.manifest
    if art.precision == "int8" and req.precision != "int8":
        raise TargetError(
            f"the artifact is INT8; it cannot be deployed as {req.precision}",
            f"compress with --recipe fp32 and deploy that with --precision {req.precision}",
        )
    if req.precision not in ("fp32", "fp16", "int8"):
        raise TargetError(f"TFLite has no '{req.precision}' conversion", "use --precision fp32, fp16 or int8")
    other = [s.get("method") for s in art.compression if s.get("method") not in REPRODUCIBLE_STEPS]
    if other:
        raise UnsupportedError(
            f"the artifact was changed by {', '.join(map(str, other))}, which its source PyTorch model does not hold; "
            "the TFLite converter rebuilds from that source",
            "deploy this artifact to an ONNX/OpenVINO target, or compress with --recipe fp32/int8 for TFLite",
        )


def _single_input(module: Any, torch: Any) -> Any:
    """``module`` behind a plain ``forward(x)`` (wrappers such as the NHWC one take ``*args``)."""

    class Single(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return Single(module).eval()


def _int8_model(litert_torch: Any, torch: Any, module: Any, example: Any, calib: np.ndarray) -> Any:
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    with torch.no_grad():
        try:  # a dynamic batch axis lets calibration run in batches (observer overhead is per call)
            batch = torch.export.Dim("batch", min=1, max=CALIB_BATCH)
            graph = torch.export.export(_single_input(module, torch), (example.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},)).module()
            step = CALIB_BATCH
        except Exception as exc:  # models with batch-specialised code: one image per call
            log.info("calibrating one image at a time (dynamic-batch export failed: %s)", _short(exc))
            graph, step = torch.export.export(module, (example,)).module(), 1
        prepared = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
        for i in track(range(0, len(calib), step), f"LiteRT INT8 calibration ({len(calib)} images)"):
            prepared(torch.from_numpy(np.ascontiguousarray(calib[i : i + step])))
        converted = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
        converted.training = False  # litert-torch reads the flag; the graph is already in eval form
    with activity("LiteRT conversion (litert-torch, INT8)"), stdout_to_stderr(), native_logs_silenced():
        return litert_torch.convert(converted, (example,), quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))


def _fp16_bytes(fp32: bytes) -> bytes:
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its summary and progress bar
        return translate_recipe.quantize_model(fp32, recipe)


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


@register("onnx", "tflite", "rebuild the artifact's PyTorch source and convert it with litert-torch (fp32, fp16, PT2E int8)", calibrates=True)
def onnx_to_tflite(req: ConvertRequest) -> ConvertResult:
    from edgefg.runtime.backends.tflite import inspect_tflite

    _check_request(req)
    litert_torch, torch = _litert()
    module = source_module(req.manifest)
    _check_source(module, torch, req.src, req.manifest, req.samples)
    pre = copy.deepcopy(req.manifest.preprocess)
    h, w = pre.input_size
    nhwc = (req.target.layout or "NCHW").upper() == "NHWC"
    if nhwc:
        module = litert_torch.to_channel_last_io(module, args=[0]).eval()
    example = torch.zeros(1, h, w, 3) if nhwc else torch.zeros(1, 3, h, w)
    notes: list[str] = []
    out = req.out_dir / FORMATS["tflite"].model_file
    try:
        if req.precision == "int8":
            if req.samples is None or req.options.get("samples_source") == "random inputs":
                raise DataError("INT8 TFLite needs calibration images", "pass --data DIR (an ImageFolder of your classes)")
            calib = np.moveaxis(req.samples, 1, -1) if nhwc else req.samples
            model = _int8_model(litert_torch, torch, module, example, calib.astype(np.float32))
            out.write_bytes(model.model_content())
            notes.append(
                f"INT8 by PT2E (symmetric int8, per-channel weights) calibrated on {len(calib)} images "
                f"({req.options.get('samples_source', 'deploy samples')}); the artifact's NNCF INT8 parameters are not reused"
            )
        else:
            with torch.no_grad(), activity(f"LiteRT conversion (litert-torch, {req.precision})"), stdout_to_stderr(), native_logs_silenced():
                content = litert_torch.convert(module, (example,)).model_content()
            out.write_bytes(_fp16_bytes(content) if req.precision == "fp16" else content)
            if req.precision == "fp16":
                notes.append("FP16 weights (dequantized to float at load; compute and I/O stay float32)")
    except (DataError, UnsupportedError):
        raise
    except Exception as exc:  # torch.export / lowering / quantizer failures: name the step and the cause
        raise UnsupportedError(
            f"litert-torch cannot convert this model to {req.precision} TFLite: {_short(exc)}",
            "deploy to an ONNX Runtime or OpenVINO target instead, or report the model architecture",
        ) from None

    info = inspect_tflite(str(out))
    float_ops = info.ops.get("DEQUANTIZE", 0) if req.precision == "int8" else 0
    if float_ops:
        notes.append(f"{float_ops} tensors are dequantized to float between int8 ops (fine for XNNPACK; splits Edge TPU/NPU delegate graphs)")
    pre.layout = info.layout or ("NHWC" if nhwc else "NCHW")
    pre.dtype = info.input.dtype
    pre.quant_scale, pre.quant_zero_point = info.input.quant_scale, info.input.quant_zero_point
    return ConvertResult(out.name, notes=notes, preprocess=pre, inputs=[info.input], outputs=[info.output])
