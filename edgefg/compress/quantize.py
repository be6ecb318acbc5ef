"""Post-training INT8 quantization of an ONNX model with NNCF (emits Q/DQ ONNX)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgefg.errors import MissingDependencyError, UnsupportedError

log = logging.getLogger(__name__)


def quantize_onnx(
    src: Path,
    dst: Path,
    samples: np.ndarray,
    transformer: bool = False,
    fast_bias_correction: bool = True,
) -> dict:
    """Quantize ``src`` to INT8 with calibration ``samples`` (preprocessed N×… array); save ``dst``.

    Returns a description of the step for the manifest/report.
    """
    try:
        import nncf
        import onnx
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "nncf", "compress") from None
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(samples), lambda x: {input_name: x[None]})
    kwargs = dict(
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(samples),
        fast_bias_correction=fast_bias_correction,
    )
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    try:
        quantized = nncf.quantize(model, dataset, **kwargs)
    except Exception as exc:  # NNCF raises a variety of errors on graphs it cannot handle
        raise UnsupportedError(f"NNCF could not quantize the model: {str(exc).splitlines()[0][:300]}") from None
    onnx.save(quantized, str(dst))
    n_q = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    return {
        "method": "int8-ptq",
        "library": f"nncf {nncf.__version__}",
        "calibration_images": int(len(samples)),
        "preset": "performance",
        "model_type": "transformer" if transformer else "default",
        "quantize_nodes": n_q,
        "format": "onnx-qdq",
    }
