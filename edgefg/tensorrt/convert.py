"""ONNX → the ONNX a Jetson (or any TensorRT host) builds its engine from.

The engine itself is built on the device (``edgefg build-engine``): a TensorRT engine is tied to
the TensorRT version and GPU that built it. Here the ONNX is made ready for the profile's TensorRT:
static batch, opset the parser reads, INT8 as explicit-quantization Q/DQ that TensorRT accepts
(signed int8, zero point 0, per-tensor activations, per-channel weights on the output axis), then
linted against the release's operator table. Deploy checks its parity in ONNX Runtime.
"""
from __future__ import annotations

import copy

from edgefg.converters import ConvertRequest, ConvertResult, register, require_matching_quantization
from edgefg.errors import MissingDependencyError, TargetError
from edgefg.formats import ENGINE_DIR, FORMATS, stand_in
from edgefg.tensorrt.builder import DLA_ONNX, DLA_RANGES


def write_dla_int8(model, out_dir) -> dict[str, float]:
    """The implicit-INT8 form of a TensorRT-ready Q/DQ model for DLA builds (see strip_qdq_for_dla)."""
    import json

    import onnx

    from edgefg.tensorrt.qdq import strip_qdq_for_dla

    float_model, ranges = strip_qdq_for_dla(model)
    onnx.save(float_model, str(out_dir / DLA_ONNX))
    (out_dir / DLA_RANGES).write_text(json.dumps(ranges, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return ranges


def default_workspace_mb(memory_mb: int | None) -> int:
    """Builder workspace: 1/8 of device memory, 256 MiB – 2 GiB (the 4 GB Nano gets 512)."""
    if not memory_mb:
        return 1024
    return int(max(256, min(2048, memory_mb // 8)))


def engine_flags(precision: str) -> dict[str, bool]:
    """Builder precision flags. INT8 Q/DQ networks also get FP16 for the layers left in float."""
    return {"fp16": precision in ("fp16", "int8"), "int8": precision == "int8"}


@register("onnx", "tensorrt-onnx", "ONNX ready for an on-device TensorRT build: static batch, opset, TensorRT-ready Q/DQ, linted")
def onnx_to_tensorrt(req: ConvertRequest) -> ConvertResult:
    try:
        import onnx
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("onnx", "compress") from None
    from edgefg.tensorrt.lint import default_opset, lint, op_table, raise_on_errors
    from edgefg.tensorrt.qdq import downconvert_opset, fix_batch, symmetric_int8_qdq

    tgt = req.target
    trt_version = str(tgt.runtime.get("tensorrt") or "")
    if not trt_version:
        raise TargetError(f"target '{tgt.name}' does not say which TensorRT it has", "add runtime.tensorrt = \"10.3\" (for example) to the profile")
    require_matching_quantization(req, "TensorRT INT8 here is explicit quantization (Q/DQ): it needs an INT8 artifact")
    table = op_table(trt_version)
    model = onnx.load(str(req.src))
    source_opset = default_opset(model)
    notes: list[str] = []
    batch = int(req.options.get("batch", 1))
    rewrite = None
    if req.precision == "int8":
        stats = symmetric_int8_qdq(model)
        rewrite = stats.as_dict()
        if stats.changed:
            notes.append(
                "Q/DQ made TensorRT-ready: "
                f"{stats.uint8_to_int8} uint8→int8, {stats.per_channel_to_per_tensor} per-channel→per-tensor, "
                f"{stats.asymmetric_to_symmetric} asymmetric→symmetric activation quantizer(s), "
                f"{stats.weights_requantized} weight tensor(s) re-quantized"
            )
    if tgt.static_shapes:
        fixed = fix_batch(model, batch)
        if fixed:
            notes.append(f"batch fixed to {batch} (was '{', '.join(sorted(set(fixed)))}'): static-shape engine")
    model = downconvert_opset(model, table.max_opset)
    if default_opset(model) != source_opset:
        notes.append(f"opset {source_opset} → {default_opset(model)} (TensorRT {trt_version} parser reads ≤ {table.max_opset})")
    issues = lint(model, trt_version, static_shapes=tgt.static_shapes)
    raise_on_errors(issues, trt_version, tgt.name)
    model_file = FORMATS["tensorrt-onnx"].model_file
    onnx.save(model, str(req.out_dir / model_file))
    dla_cores = int(tgt.runtime.get("dla_cores", 0) or 0)
    dla = None
    if req.precision == "int8" and dla_cores:
        dla = write_dla_int8(model, req.out_dir)
        notes.append(f"DLA form written: {DLA_ONNX} (Q/DQ stripped) + {len(dla)} tensor ranges in {DLA_RANGES}: DLA takes only implicit INT8")

    inputs = copy.deepcopy(req.manifest.inputs)
    outputs = copy.deepcopy(req.manifest.outputs)
    if tgt.static_shapes:
        for spec in inputs + outputs:
            if spec.shape and not isinstance(spec.shape[0], int):
                spec.shape[0] = batch
    options = {
        "engine": {
            "precision": req.precision,
            **engine_flags(req.precision),
            "batch": batch if tgt.static_shapes else None,
            "workspace_mb": default_workspace_mb(tgt.device_info.get("memory_mb")),
            "dla_cores": dla_cores,
        },
        "expected_device": {k: str(tgt.runtime[k]) for k in ("jetpack", "tensorrt", "cuda", "compute_capability") if k in tgt.runtime},
        "engine_dir": ENGINE_DIR,
        "onnx_opset": default_opset(model),
        "lint": {"tensorrt_table": table.version, "warnings": [str(i) for i in issues]},
    }
    if rewrite is not None:
        options["qdq_rewrite"] = rewrite
    if dla is not None:
        options["dla_int8"] = {"onnx": DLA_ONNX, "ranges": DLA_RANGES, "tensors": len(dla)}
    return ConvertResult(model_file, notes, options, host_backend=stand_in("tensorrt"), inputs=inputs, outputs=outputs)
