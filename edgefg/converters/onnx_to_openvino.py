"""ONNX → OpenVINO IR (.xml + .bin). Q/DQ INT8 ONNX becomes an INT8 IR; ``fp16`` compresses
weights to FP16; FP32 stays FP32 and is run with f32 inference precision."""
from __future__ import annotations

import copy

from edgefg.converters import ConvertRequest, ConvertResult, register, require_matching_quantization
from edgefg.errors import MissingDependencyError, ModelLoadError, TargetError
from edgefg.formats import FORMATS, default_backend_options, openvino_device_present, openvino_inference_precision


@register("onnx", "openvino", "convert ONNX to OpenVINO IR with openvino.convert_model")
def onnx_to_openvino(req: ConvertRequest) -> ConvertResult:
    try:
        import openvino as ov
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("openvino", "openvino") from None
    require_matching_quantization(req)
    try:
        model = ov.convert_model(str(req.src))
    except Exception as exc:  # OpConversionFailure and friends
        raise ModelLoadError(f"OpenVINO cannot convert '{req.src.name}': {str(exc).strip().splitlines()[0][:300]}") from None
    notes: list[str] = []
    inputs = outputs = None
    preprocess = None
    if req.options.get("embed_preprocess"):
        model, preprocess, inputs = _embed_preprocess(ov, model, req)
        notes.append("preprocessing embedded in the IR (PrePostProcessor): the model takes uint8 NHWC BGR pixels after resize/crop")
    if req.target.static_shapes:  # NPU compiles static shapes only: fix the batch in the IR
        batch = int(req.options.get("batch", 1))
        shape = [batch] + [int(d) for d in (inputs or req.manifest.inputs)[0].shape[1:]]
        try:
            model.reshape(shape)
        except Exception as exc:
            raise TargetError(f"the model cannot be reshaped to {shape} for {req.target.name}: {str(exc).strip().splitlines()[0][:200]}") from None
        inputs, outputs = copy.deepcopy(inputs or req.manifest.inputs), copy.deepcopy(req.manifest.outputs)
        for spec in inputs + outputs:
            if spec.shape and not isinstance(spec.shape[0], int):
                spec.shape[0] = batch
        notes.append(f"static shape {shape} (the {req.target.device} plugin compiles static shapes only)")
    model_file = FORMATS["openvino"].model_file
    ov.save_model(model, str(req.out_dir / model_file), compress_to_fp16=req.precision == "fp16")
    options = default_backend_options("openvino", req.target.device)
    device = options["device"]
    host_backend = None
    if device != "CPU" and not openvino_device_present(device, ov.Core().available_devices):
        host_backend = "openvino"  # the same IR on this host's CPU
        notes.append(f"OpenVINO device {device} is not present on the deploying host: parity was measured with the same IR on CPU")
    return ConvertResult(
        model_file,
        notes,
        backend_options={**options, "inference_precision": openvino_inference_precision(req.precision, device)},
        host_backend=host_backend,
        inputs=inputs,
        outputs=outputs,
        preprocess=preprocess,
    )


def _embed_preprocess(ov, model, req: ConvertRequest):
    """Move normalisation, BGR→RGB and NHWC→NCHW into the IR with OpenVINO's PrePostProcessor.

    The bundle's manifest then says the model takes uint8 NHWC BGR pixels (geometry — resize and
    crop — stays in edgefg's one preprocessing function): mean 0, std 1/255 and a quantization
    scale of 1 turn that function's normalisation into the identity on raw pixels.
    """
    from openvino.preprocess import ColorFormat, PrePostProcessor

    pre = req.manifest.preprocess
    if pre.layout.upper() != "NCHW" or pre.dtype != "float32":
        raise TargetError(f"--embed-preprocess needs an NCHW float32 model input (this one is {pre.layout} {pre.dtype})")
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if pre.color.upper() == "RGB":
        steps.convert_color(ColorFormat.RGB)
    steps.mean([m * 255.0 for m in pre.mean]).scale([s * 255.0 for s in pre.std])
    model = ppp.build()
    h, w = pre.input_size
    from edgefg.runtime.engine.preprocess import border_fill

    embedded = copy.deepcopy(pre)
    embedded.border_fill = border_fill(pre)  # the pad colour stays the model's mean colour
    embedded.color, embedded.layout, embedded.dtype = "BGR", "NHWC", "uint8"
    embedded.mean, embedded.std = (0.0, 0.0, 0.0), (1 / 255.0,) * 3
    embedded.quant_scale, embedded.quant_zero_point = 1.0, 0
    inputs = copy.deepcopy(req.manifest.inputs)
    inputs[0].shape = [inputs[0].shape[0], h, w, 3]
    inputs[0].dtype = "uint8"
    return model, embedded, inputs
