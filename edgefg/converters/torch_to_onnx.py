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


PARITY_INPUTS = 2  # seeded inputs a cached export must reproduce torch's outputs on before it is reused
PARITY_TOL = 1e-3  # × max(1, |torch output|): fp32 exports agree to ~1e-5


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def export_parity(module, input_size: tuple[int, int], onnx_bytes: bytes) -> str | None:
    """None when the ONNX model gives ``module``'s outputs on :data:`PARITY_INPUTS` seeded inputs,
    else what differs (also when it cannot be run). Skipped (None) without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(PARITY_INPUTS, 3, *input_size, generator=g)
    with torch.no_grad():
        want = module.eval()(x).detach().cpu().numpy()
    try:
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    except Exception as exc:
        return f"it cannot be run ({str(exc).splitlines()[0][:160]})"
    if got.shape != want.shape:
        return f"its output shape {tuple(got.shape)} is not the model's {tuple(want.shape)}"
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_TOL * max(1.0, float(np.abs(want).max())):
        return f"its outputs differ from the model's by up to {diff:.3g}"
    return None


def _cached_entry(module, input_size: tuple[int, int], cached: Path) -> bytes | None:
    """The bytes of a trustworthy cache entry, or None (an entry that fails a check is deleted with
    a warning): the sha256 recorded when it was stored must match, and the export must reproduce
    the model's outputs."""
    import json

    meta = cached.with_suffix(".json")
    try:
        data = cached.read_bytes()
        recorded = json.loads(meta.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        why = f"its sha256 record is missing or unreadable ({exc.__class__.__name__})"
    else:
        why = None if recorded == _sha256(data) else "it does not match the sha256 recorded when it was stored (modified or damaged)"
        if why is None:
            why = export_parity(module, input_size, data)
            if why is None:
                return data
            why = "it does not match the model: " + why
    log.warning("discarding the cached ONNX export %s: %s; exporting again", cached, why)
    for f in (cached, meta):
        try:
            f.unlink()
        except OSError:
            pass
    return None


def export_onnx_cached(module, input_size: tuple[int, int], path: str | Path, opset: int = OPSET) -> Path:
    """:func:`export_onnx`, reusing an earlier export of the very same model (an input model is
    exported once, however many recipes/budgets are tried on it; the dynamo export is most of a
    short compress run). An entry is keyed by :func:`export_key`, stored with its sha256 beside it
    (``<key>.json``) and reused only when that hash and a parity check against torch
    (:func:`export_parity`) pass; otherwise it is discarded with a warning and exported again."""
    import json

    from edgefg.outputs import write_bytes

    path = Path(path)
    root = cache_dir()
    if root is None:
        return export_onnx(module, input_size, path, opset)
    key = export_key(module, input_size, opset)
    cached = root / "onnx" / f"{key}.onnx"
    if cached.is_file() or cached.with_suffix(".json").is_file():
        data = _cached_entry(module, input_size, cached)
        if data is not None:
            write_bytes(path, data)
            log.info("reusing the ONNX export of this model from %s (sha256 and outputs checked; EDGEFG_CACHE=off to export again)", cached)
            return path
    export_onnx(module, input_size, path, opset)
    try:
        data = path.read_bytes()
        write_bytes(cached, data)
        write_bytes(cached.with_suffix(".json"), json.dumps({"key": key, "sha256": _sha256(data), "size": len(data)}).encode())
    except Exception as exc:  # a read-only home must not fail the export
        log.info("could not cache the ONNX export in %s: %s", cached.parent, exc)
    return path
