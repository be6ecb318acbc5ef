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


def cache_dir() -> Path | None:
    """Where exports of unchanged input models are kept: ``$EDGEFG_CACHE`` (``off`` disables),
    else ``$XDG_CACHE_HOME/edgefg`` or ``~/.cache/edgefg``."""
    import os

    value = os.environ.get("EDGEFG_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgefg"


def export_key(module, input_size: tuple[int, int], opset: int = OPSET) -> str:
    """sha256 of everything the export depends on: the module's structure (repr and class), every
    tensor of its state, the input size, opset, torch and this exporter's source."""
    import hashlib

    import torch

    h = hashlib.sha256()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}\n{tuple(input_size)}\n{opset}\n{torch.__version__}\n".encode())
    h.update(Path(__file__).read_bytes())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_onnx_cached(module, input_size: tuple[int, int], path: str | Path, opset: int = OPSET) -> Path:
    """:func:`export_onnx`, reusing an earlier export of the very same model (an input model is
    exported once, however many recipes/budgets are tried on it; the dynamo export is most of a
    short compress run)."""
    import shutil

    from edgefg.outputs import write_bytes

    path = Path(path)
    root = cache_dir()
    if root is None:
        return export_onnx(module, input_size, path, opset)
    cached = root / "onnx" / f"{export_key(module, input_size, opset)}.onnx"
    if cached.is_file():
        shutil.copyfile(cached, path)
        log.info("reusing the ONNX export of this model from %s (EDGEFG_CACHE=off to export again)", cached)
        return path
    export_onnx(module, input_size, path, opset)
    try:
        write_bytes(cached, path.read_bytes())
    except Exception as exc:  # a read-only home must not fail the export
        log.info("could not cache the ONNX export in %s: %s", cached.parent, exc)
    return path
