"""Wrap an already-converted model file (.tflite, .onnx, OpenVINO .xml+.bin) into a bundle.

``edgefg deploy model.tflite --labels FILE --target rpi5 -o BUNDLE`` reads what the file says
about itself — input/output names, shapes, dtypes, quantization, layout, precision, a final
Softmax — and takes preprocessing from, in order: CLI options, a sidecar ``config.json`` (timm
``pretrained_cfg`` keys) beside the model, then defaults. The default for an integer (uint8/int8)
input is raw pixels — mean and std derived from the file's input quantization, the convention of
quantized TFLite image classifiers — and for a float input ImageNet mean/std (with a warning).
The bundle is then what ``validate``, ``run`` and ``bench`` open like any other.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import ClassMismatchError, InputPathError, MissingDependencyError, ModelLoadError, TargetError, UnsupportedError
from edgefg.formats import FORMATS, default_backend_options, format_for_suffix, wrappable_suffixes
from edgefg.manifest import Manifest, Preprocess, TensorSpec, atomic_output_dir, guess_layout, sha256_file
from edgefg.runtime.engine.preprocess import describe
from edgefg.shared_types import DeployResult
from edgefg.targets import Target, load_target

log = logging.getLogger(__name__)

SMOKE_IMAGES = 8


@dataclass
class ModelIO:
    """What the model file says about itself."""

    input: TensorSpec
    output: TensorSpec
    layout: str | None
    precision: str
    output_op: str | None
    files: list[Path] = field(default_factory=list)  # every file the model needs, the model first
    notes: list[str] = field(default_factory=list)


# -- reading model files ------------------------------------------------------------------------
def _inspect_tflite(path: Path) -> ModelIO:
    from edgefg.runtime.backends.base import backend_class

    backend_class("tflite")  # a clear MissingDependencyError when no LiteRT is installed
    from edgefg.runtime.backends.tflite import inspect_tflite

    info = inspect_tflite(str(path))
    return ModelIO(info.input, info.output, info.layout, info.precision, info.output_op, [path])


def _inspect_onnx(path: Path) -> ModelIO:
    try:
        import onnx
        from onnx import helper
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("onnx", "compress") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise ModelLoadError(f"'{path}' is not a readable ONNX model: {str(exc).splitlines()[0][:200]}", "check the file (re-copy or re-export it)") from None
    graph = model.graph
    init = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    if len(inputs) != 1 or not graph.output:
        raise UnsupportedError(f"'{path}' has {len(inputs)} inputs", "edgefg runs image classifiers with one image input")

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return TensorSpec(value.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name)

    inp, out = spec(inputs[0]), spec(graph.output[0])
    if len(inp.shape) != 4:
        raise UnsupportedError(f"'{path}' input has shape {inp.shape}; an image classifier takes N×C×H×W or N×H×W×C")
    ops = {n.op_type for n in graph.node}
    dtypes = {i.data_type for i in graph.initializer}
    quant_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
    precision = "int8" if ops & quant_ops else "fp16" if onnx.TensorProto.FLOAT16 in dtypes else "fp32"
    producer = next((n.op_type for n in graph.node if out.name in n.output), None)
    if inp.dtype in ("uint8", "int8"):  # quantization of an integer input: the DequantizeLinear it feeds
        consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL}
        dq = next((n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == inp.name), None)
        if dq is not None and dq.input[1] in consts:
            inp.quant_scale = float(consts[dq.input[1]].reshape(-1)[0])
            inp.quant_zero_point = int(consts[dq.input[2]].reshape(-1)[0]) if len(dq.input) > 2 and dq.input[2] in consts else 0
    files = [path]
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            extra = _external_data_path(path, location)
            if extra is None or not extra.is_file():
                raise InputPathError(f"'{path}' keeps weights in '{location}', which is missing", "copy the external data file beside the model")
            if extra not in files:
                files.append(extra)
    return ModelIO(inp, out, guess_layout(inp.shape), precision, producer, files)


def _external_data_path(model: Path, location: str | None) -> Path | None:
    """The file an ONNX initializer's external data names — refused unless it is a plain relative name
    that stays inside the model's folder (a hostile ``../x`` or ``/etc/x`` would be read and copied)."""
    from edgefg.trust.paths import inside, name_problem

    if not location:
        return None
    problem = name_problem(location)
    extra = model.parent / location
    if problem or not inside(extra, model.parent):
        raise InputPathError(
            f"'{model.name}' keeps weights in '{location[:80]}', outside its folder" + (f" ({problem})" if problem else " (through a symlink)"),
            "external data must sit beside the model (re-save it with onnx.save(..., location='weights.bin'))",
        )
    return extra


def _inspect_openvino(path: Path) -> ModelIO:
    try:
        import openvino as ov
    except ModuleNotFoundError:
        raise MissingDependencyError.for_module("openvino", "openvino") from None
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise InputPathError(f"'{path}' has no weights file '{weights.name}' beside it", "copy the .bin of the IR next to the .xml")
    from edgefg.trust.paths import inside

    if not inside(weights, path.parent):
        raise InputPathError(f"'{weights}' is a symlink out of the model's folder", "copy the real .bin next to the .xml")
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO cannot read '{path}': {str(exc).strip().splitlines()[0][:200]}", "check that the .xml and .bin belong together") from None
    if len(model.inputs) != 1:
        raise UnsupportedError(f"'{path}' has {len(model.inputs)} inputs", "edgefg runs image classifiers with one image input")

    def spec(port) -> TensorSpec:
        shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
        names = port.get_names()
        return TensorSpec(sorted(names)[0] if names else port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)

    inp, out = spec(model.inputs[0]), spec(model.outputs[0])
    if len(inp.shape) != 4:
        raise UnsupportedError(f"'{path}' input has shape {inp.shape}; an image classifier takes N×C×H×W or N×H×W×C")
    types = {op.get_type_name() for op in model.get_ops()}
    f16 = any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())
    precision = "int8" if "FakeQuantize" in types else "fp16" if f16 else "fp32"
    producer = model.outputs[0].get_node().input_value(0).get_node().get_type_name()
    return ModelIO(inp, out, guess_layout(inp.shape), precision, producer, [path, weights])


INSPECT = {"tflite": _inspect_tflite, "onnx": _inspect_onnx, "openvino": _inspect_openvino}


# -- preprocessing, labels ---------------------------------------------------------------------
def _sidecar_config(model: Path) -> dict[str, Any]:
    path = model.with_name("config.json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{path}' is not valid JSON: {exc}") from None


def _labels(model: Path, labels: str | Path | None, cfg: dict[str, Any], n_out: int | None) -> tuple[list[str], str]:
    from edgefg.models.loader import read_labels

    if labels is not None:
        names, origin = read_labels(labels), str(labels)
    elif cfg.get("label_names"):
        names, origin = [str(x) for x in cfg["label_names"]], str(model.with_name("config.json"))
    elif model.with_name("labels.txt").is_file():
        names, origin = read_labels(model.with_name("labels.txt")), str(model.with_name("labels.txt"))
    else:
        raise InputPathError(f"no labels for '{model.name}'", "pass --labels FILE with one class name per line, in output order")
    if n_out is not None and len(names) != n_out:
        hint = "pass a labels file with one line per model output, in output order"
        if abs(len(names) - n_out) == 1:
            hint += " (classifiers converted from TensorFlow often have an extra 'background' output: add or remove that line)"
        raise ClassMismatchError(f"{len(names)} labels in '{origin}' for a model with {n_out} outputs", hint)
    return names, origin


def _preprocess(io: ModelIO, cfg: dict[str, Any], opts: dict[str, Any], notes: list[str]) -> tuple[Preprocess, str]:
    from edgefg.models.loader import preprocess_from_cfg

    layout = opts.get("layout") or io.layout
    if layout is None:
        raise UnsupportedError(f"cannot tell the layout of input shape {io.input.shape}", "pass --layout NCHW or NHWC")
    hw_axes = (2, 3) if layout == "NCHW" else (1, 2)
    dims = [io.input.shape[a] for a in hw_axes]
    size = opts.get("input_size")
    if all(isinstance(d, int) and d > 0 for d in dims):
        if size and tuple(size) != tuple(dims):
            raise UnsupportedError(f"the model's input is fixed at {dims[0]}×{dims[1]}, not {size[0]}×{size[1]}", "drop --input-size")
        size = tuple(dims)
    pcfg = dict(cfg.get("pretrained_cfg") or cfg)
    size = size or (tuple(pcfg["input_size"][-2:]) if pcfg.get("input_size") else None)
    if not size:
        raise UnsupportedError(f"the model's input size is dynamic ({io.input.shape})", "pass --input-size H W")
    integer = io.input.dtype in ("uint8", "int8")
    scale = io.input.quant_scale if io.input.quant_scale else 1.0 if integer else None
    zero = io.input.quant_zero_point if io.input.quant_zero_point is not None else 0 if integer else None
    timm_cfg = bool(pcfg) and any(k in pcfg for k in ("mean", "std", "interpolation", "crop_pct", "crop_mode"))
    if timm_cfg:
        origin = "config.json"
    elif integer:  # raw pixels: mean/std that make the quantized input equal the 0..255 pixel value
        # TFLite's convention (Coral/TF examples): the whole image, resized (squashed) to the input size
        pcfg.update(mean=(zero / 255.0,) * 3, std=(1.0 / (255.0 * scale),) * 3, crop_pct=1.0, crop_mode="squash", interpolation="bilinear")
        origin = "defaults: raw pixels (the file's input quantization), resize (no crop) to the input size, bilinear"
    else:
        origin = "defaults: ImageNet mean/std, bilinear, crop 0.875"
    if origin.startswith("defaults: ImageNet") and opts.get("mean") is None and opts.get("std") is None:
        log.warning("no config.json beside the model and no --mean/--std: assuming ImageNet mean/std (check with edgefg validate)")
    for key in ("mean", "std", "interpolation", "crop_pct", "crop_mode"):
        if opts.get(key) is not None:
            pcfg[key] = opts[key]
            origin = "command-line options" + (f" over {origin}" if not origin.startswith("command") else "")
    pcfg["input_size"] = (3, int(size[0]), int(size[1]))
    pcfg.pop("test_input_size", None)
    # a timm config was evaluated through PIL; a file without one has no reference: the fast OpenCV resizer
    resize = opts.get("resize") or (pcfg.get("resize") if pcfg.get("resize") in ("pil", "opencv") else None) or ("pil" if timm_cfg else "opencv")
    pre = preprocess_from_cfg(pcfg, resize=resize)
    pre.layout, pre.dtype = layout, io.input.dtype
    pre.quant_scale, pre.quant_zero_point = scale, zero
    if cfg.get("color") or opts.get("color"):
        pre.color = str(opts.get("color") or cfg["color"]).upper()
    notes.append(f"preprocessing: {describe(pre)} ({origin})")
    return pre, origin


# -- the wrap ----------------------------------------------------------------------------------
def wrap_model(
    model: str | Path,
    target: str | Path | Target,
    out: str | Path,
    labels: str | Path | None = None,
    precision: str | None = None,
    force: bool = False,
    data: str | Path | None = None,
    release: int | None = None,
    **opts: Any,
):
    """Bundle an already-converted model file for ``target``. ``opts``: layout, input_size,
    mean, std, interpolation, crop_pct, crop_mode, resize, color, output_activation (override what the file and
    its config.json say)."""
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.versions import library_versions

    model = Path(model)
    file_format = format_for_suffix(model.suffix)
    if file_format is None:
        raise UnsupportedError(
            f"'{model.name}' is not a model file edgefg can wrap",
            f"wrap {', '.join(wrappable_suffixes())} files, or pass the directory written by edgefg compress",
        )
    fmt = file_format.name
    tgt = (target if isinstance(target, Target) else load_target(target)).require_available()
    if tgt.backend not in file_format.read_by:
        fits = [s for f in sorted(FORMATS.values(), key=lambda f: f.name) if tgt.backend in f.read_by for s in f.suffixes]
        raise TargetError(
            f"a {model.suffix} model does not run on target '{tgt.name}' ({tgt.backend})",
            f"that target takes {', '.join(fits) or 'models deploy converts'}; "
            "convert the model first, or deploy a compressed artifact",
        )
    io = INSPECT[fmt](model)
    if precision and precision != io.precision:
        raise TargetError(
            f"'{model.name}' is a {io.precision} model; an already-converted model is wrapped as it is, not as {precision}",
            "drop --precision, or convert the model to that precision first",
        )
    tgt.check_precision(io.precision)
    cfg = _sidecar_config(model)
    n_out = io.output.shape[-1] if io.output.shape and isinstance(io.output.shape[-1], int) and io.output.shape[-1] > 0 else None
    names, labels_origin = _labels(model, labels, cfg, n_out)
    notes = list(io.notes)
    pre, pre_origin = _preprocess(io, cfg, opts, notes)
    if pre.layout != tgt.layout:
        notes.append(f"the model takes {pre.layout} input (the profile's usual layout is {tgt.layout}); the manifest records {pre.layout}")
    activation = opts.get("output_activation") or cfg.get("output_activation")
    if not activation:
        activation = "softmax" if (io.output_op or "").lower() == "softmax" else "logits"
        if activation == "softmax":
            notes.append(f"the output is a {io.output_op}: scores are probabilities")
    inp = TensorSpec(io.input.name, list(io.input.shape), io.input.dtype, pre.quant_scale if pre.dtype in ("uint8", "int8") else None,
                     pre.quant_zero_point if pre.dtype in ("uint8", "int8") else None)
    h_ax, w_ax = (2, 3) if pre.layout == "NCHW" else (1, 2)
    inp.shape[h_ax], inp.shape[w_ax] = pre.input_size  # dynamic spatial dims become the chosen size
    backend_options = default_backend_options(tgt.backend, tgt.device)

    out = Path(out)
    manifest = Manifest(
        name=out.name,
        kind="bundle",
        model_file=model.name,
        format=fmt,
        backend=tgt.backend,
        precision=io.precision,
        labels=names,
        preprocess=pre,
        inputs=[inp],
        outputs=[io.output],
        output_activation=activation,
        target=tgt.name,
        backend_options=backend_options,
        compression=[{"method": "wrap", "target": tgt.name, "notes": notes}],
        source={"type": "wrapped", "path": str(model.resolve()), "format": fmt, "sha256": sha256_file(model),
                "labels": labels_origin, "preprocess": pre_origin},
        versions=library_versions(),
    )
    with atomic_output_dir(out, force) as tmp:
        for f in io.files:
            dest = tmp / f.relative_to(model.parent)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        if tgt.path:
            shutil.copy2(tgt.path, tmp / "target.toml")
        x, source = _smoke_inputs(manifest, data)
        host = {}
        if tgt.backend == "openvino" and (tgt.device or "CPU") != "CPU":  # the device may be absent here: same IR on the CPU
            host = {"device": "CPU"}
            source += f" (run on the CPU, standing in for {tgt.device})"
        with LoadedBundle(tmp, verify=False, manifest=manifest, **host) as bundle:
            scores = bundle.scores(x)
        if scores.shape != (len(x), len(names)) or not np.isfinite(scores).all():
            raise ModelLoadError(f"'{model.name}' gave scores of shape {list(scores.shape)} (finite: {bool(np.isfinite(scores).all())}) for {len(names)} labels")
        manifest.parity = {"reference": None, "inputs": source, "samples": int(len(x)),
                           "note": "wrapped model: nothing to compare with; it loads and gives finite scores for every label"}
        manifest.record_files(tmp)
        manifest.stamp_release(release)
        manifest.save(tmp)
    return DeployResult(out, manifest, tgt)


def _smoke_inputs(manifest: Manifest, data: str | Path | None) -> tuple[np.ndarray, str]:
    from edgefg.calibration.dataset import iter_batches, scan

    if data is not None:
        samples = scan(data, manifest.labels).samples  # also checks the data's classes against the labels
        images = samples[:: max(1, len(samples) // SMOKE_IMAGES)][:SMOKE_IMAGES]
        batches = [b.x for b in iter_batches(images, manifest.preprocess, SMOKE_IMAGES)]
        if batches:
            return np.concatenate(batches), str(data)
    from edgefg.runtime.engine.preprocess import preprocess

    x = preprocess(np.full((*manifest.preprocess.input_size, 3), 128, np.uint8), manifest.preprocess)[None]
    expected = [d for d in manifest.inputs[0].shape[1:]]
    if any(isinstance(e, int) and e != d for d, e in zip(x.shape[1:], expected)) or len(expected) != x.ndim - 1:  # named dims are dynamic
        raise UnsupportedError(
            f"preprocessing gives inputs of shape {list(x.shape[1:])}, the model takes {expected}",
            "check --layout and --input-size",
        )
    return x, "a grey image"
