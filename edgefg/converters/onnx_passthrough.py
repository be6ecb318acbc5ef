"""ONNX → ONNX (for ONNX Runtime targets): the artifact's ONNX is already what the runtime takes."""
from __future__ import annotations

import shutil

from edgefg.converters import ConvertRequest, ConvertResult, register
from edgefg.errors import TargetError
from edgefg.formats import FORMATS, default_backend_options


@register("onnx", "onnx", "copy the ONNX model (FP32, or INT8 as Q/DQ) for ONNX Runtime")
def onnx_to_onnx(req: ConvertRequest) -> ConvertResult:
    if req.precision != req.manifest.precision:
        raise TargetError(
            f"the onnxruntime backend runs the artifact as compressed ({req.manifest.precision}); "
            f"'{req.precision}' needs its own artifact",
            f"run: edgefg compress ... --recipe {req.precision}",
        )
    model_file = FORMATS["onnx"].model_file
    shutil.copy2(req.src, req.out_dir / model_file)
    return ConvertResult(model_file, backend_options=default_backend_options(req.target.backend))
