"""ONNX → OpenVINO IR (.xml + .bin). Q/DQ INT8 ONNX becomes an INT8 IR; ``fp16`` compresses
weights to FP16; FP32 stays FP32 and is run with f32 inference precision."""
from __future__ import annotations

from edgefg.converters import ConvertRequest, ConvertResult, register
from edgefg.errors import MissingDependencyError, ModelLoadError, TargetError


@register("onnx", "openvino", "convert ONNX to OpenVINO IR with openvino.convert_model")
def onnx_to_openvino(req: ConvertRequest) -> ConvertResult:
    try:
        import openvino as ov
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("openvino", "openvino") from None
    src_precision = req.manifest.precision
    if src_precision == "int8" and req.precision != "int8":
        raise TargetError(
            f"the artifact is INT8; it cannot be deployed as {req.precision}",
            f"compress with --recipe fp32 and deploy that with --precision {req.precision}",
        )
    if src_precision != "int8" and req.precision == "int8":
        raise TargetError("the artifact is not quantized; INT8 needs an INT8 artifact", "run: edgefg compress ... --recipe int8")
    try:
        model = ov.convert_model(str(req.src))
    except Exception as exc:  # OpConversionFailure and friends
        raise ModelLoadError(f"OpenVINO cannot convert '{req.src.name}': {str(exc).strip().splitlines()[0][:300]}") from None
    ov.save_model(model, str(req.out_dir / "model.xml"), compress_to_fp16=req.precision == "fp16")
    inference = {"fp32": "f32", "int8": "f32", "fp16": "f32", "bf16": "bf16"}[req.precision]
    device = req.target.device or "CPU"
    if device != "CPU" and req.precision == "fp16":
        inference = "f16"
    return ConvertResult("model.xml", backend_options={"device": device, "inference_precision": inference})
