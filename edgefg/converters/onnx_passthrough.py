"""ONNX → ONNX (for ONNX Runtime targets): the artifact's ONNX is already what the runtime takes."""
from __future__ import annotations

import shutil

from edgefg.converters import ConvertRequest, ConvertResult, register
from edgefg.errors import TargetError


@register("onnx", "onnx", "copy the ONNX model (FP32, or INT8 as Q/DQ) for ONNX Runtime")
def onnx_to_onnx(req: ConvertRequest) -> ConvertResult:
    if req.precision != req.manifest.precision:
        raise TargetError(
            f"the onnxruntime backend runs the artifact as compressed ({req.manifest.precision}); "
            f"'{req.precision}' needs its own artifact",
            f"run: edgefg compress ... --recipe {req.precision}",
        )
    shutil.copy2(req.src, req.out_dir / "model.onnx")
    return ConvertResult("model.onnx", backend_options={"providers": ["CPUExecutionProvider"]})
