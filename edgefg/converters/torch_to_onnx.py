"""torch.nn.Module → ONNX with a dynamic batch axis and static spatial size.

Uses the dynamo exporter (clean graph: timm's static 'same' pads fold into Conv) and falls back
to the TorchScript exporter where dynamo fails.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from edgefg.errors import UnsupportedError

log = logging.getLogger(__name__)
OPSET = 18  # the dynamo exporter's floor; TensorRT 10 and current OpenVINO/ONNX Runtime read it
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(module, input_size: tuple[int, int], path: str | Path, opset: int = OPSET) -> Path:
    """Export ``module`` (eval mode) taking N×3×H×W to a single-file ONNX at ``path``."""
    import onnx
    import torch

    from edgefg.progress import stdout_to_stderr

    path = Path(path)
    x = torch.randn(2, 3, *input_size)
    module = module.eval()
    errors = []
    with warnings.catch_warnings(), torch.no_grad(), stdout_to_stderr():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                external_data=False,
                verbose=False,
            )
            program.save(str(path), external_data=False)
        except Exception as exc:  # dynamo export fails on some dynamic python in models
            errors.append(f"dynamo: {str(exc).splitlines()[0][:200]}")
            log.info("dynamo ONNX export failed (%s); trying the TorchScript exporter", errors[-1])
            try:
                torch.onnx.export(
                    module,
                    x,
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
            except Exception as exc2:
                errors.append(f"torchscript: {str(exc2).splitlines()[0][:200]}")
                raise UnsupportedError("the model cannot be exported to ONNX: " + "; ".join(errors)) from None
    onnx.checker.check_model(onnx.load(str(path)))
    return path
