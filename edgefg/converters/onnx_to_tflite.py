"""Artifact → TFLite (.tflite) with litert-torch: FP32, FP16 weights, or full INT8 (PT2E).

litert-torch converts PyTorch, not ONNX, so the converter rebuilds a PyTorch module and checks it
against the artifact's ONNX before converting: the artifact's own weights (``pytorch/``: config.json
+ model.safetensors, with the pruned layer widths) when PyTorch steps changed them (structured
pruning, distillation, fine-tuning, input down-sampling), else the model named in the manifest's
``source`` (for an artifact compressed from another artifact: that artifact's module). Graph edits
(EViT/ToMe token reduction with or without CLCA, ILA adapters) are rebuilt too: the ViT from
``pytorch/``, wrapped again from ``pytorch/graph_edit.json`` (options) and
``pytorch/graph_edit.safetensors`` (the wrapper's own tensors), all checksummed. A timm ViT with
``dynamic_img_size`` whose patch grid fits the input is converted in its static form (under
torch.export timm resamples the position embeddings even at the same size, an op LiteRT has no
lowering for); one that really resamples is refused in one line. The measured alternative, onnx2tf
from the ONNX, needs its own environment (numpy 1.x, TensorFlow) and fails on DeiT (Flex ops);
litert-torch converts the CNNs and ViTs tried (see the README).

* ``fp32``: exact conversion; ``fp16``: float16 weights (ai-edge-quantizer), float compute/IO.
* ``int8``: PT2E static quantization (symmetric int8, per-channel weights, histogram observers)
  calibrated on deploy's stratified images; int8 input and output. The artifact's NNCF INT8
  parameters are not carried over: TFLite's INT8 is recomputed from the FP32 PyTorch module.

For profiles with ``layout = "NHWC"`` the model is wrapped so that its input is N×H×W×C; the
manifest's preprocessing records that and the input/output quantization read from the file.

``deploy --embedding`` (the request's manifest lists an output of role "embedding"): the module's
final linear classifier is split off — the body up to it, then the classifier — and the converted
model returns (scores, classifier input), checked against the unsplit module first. In INT8 both
outputs are int8 tensors with their own scale and zero point, recorded per output and used to
dequantize; the file's signature order (``output_0``, ``output_1``) says which is which.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.converters import ConvertRequest, ConvertResult, register
from edgefg.errors import DataError, InputPathError, MissingDependencyError, ModelLoadError, TargetError, UnsupportedError
from edgefg.formats import FORMATS
from edgefg.models.loader import ARTIFACT_TORCH_DIR, GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS
from edgefg.progress import activity, native_logs_silenced, stdout_to_stderr, track

log = logging.getLogger(__name__)

# compression steps the source model + a fresh TFLite quantization reproduce
REPRODUCIBLE_STEPS = {"int8-ptq"}
# steps that change the weights or layer widths of the timm module: built from the artifact's own weights
WEIGHT_STEPS = {"structured-pruning", "distillation", "fine-tuning", "input down-sampling"}
# graph edits that wrap the timm ViT: rebuilt from the artifact's weights + the wrapper's options and tensors
GRAPH_EDIT_METHODS = {"token-reduction-evit", "token-reduction-tome", "ila-adapters"}
SOURCE_TOLERANCE = 1e-3  # max |torch - artifact| relative to the logit range, for FP32 artifacts
# an INT8 artifact is checked against the FP32 module it was quantized from: a coarse bound that catches a
# wrong model (other weights), not quantization error (NNCF INT8 vs its FP32 model measured 0.013-0.041 on
# mobilenetv2_cub100, groups of 4 cub100 test images); the artifact's own weights are also checksummed
INT8_SOURCE_TOLERANCE = 0.25
CHECK_SAMPLES = 4
CALIB_BATCH = 16


@dataclass(frozen=True)
class Origin:
    """Where the PyTorch module comes from: an artifact's own weights (``pytorch/``) or the source
    model it was compressed from; ``folder``/``manifest``: the artifact whose ONNX it must equal."""

    kind: str  # "weights" | "source"
    folder: Path
    manifest: Any

    def describe(self) -> str:
        if self.kind == "weights":
            return f"the artifact's PyTorch weights '{self.folder / ARTIFACT_TORCH_DIR}'"
        return f"the source model '{(self.manifest.source or {}).get('path')}'"


def _litert():
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    try:
        with native_logs_silenced():  # TensorFlow's import-time oneDNN/absl notices
            import litert_torch
            import torch
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "litert_torch", "tflite-convert") from None
    return litert_torch, torch


def source_module(manifest: Any) -> Any:
    """Rebuild the PyTorch module the artifact was compressed from (eval mode, export-friendly)."""
    src = manifest.source or {}
    kind, path = src.get("type"), src.get("path")
    if kind == "onnx":
        raise UnsupportedError(
            "the artifact was compressed from an ONNX model; the TFLite converter (litert-torch) needs the PyTorch model",
            "compress from the PyTorch model (timm hub folder or checkpoint + --arch), or convert the ONNX to .tflite "
            "yourself and wrap it: edgefg deploy model.tflite --labels FILE --target ...",
        )
    if kind not in ("timm-hub", "timm-checkpoint"):
        raise UnsupportedError(f"the artifact's source model type '{kind}' cannot be rebuilt for litert-torch", "compress from a timm hub folder or checkpoint")
    if not path or not Path(path).exists():
        raise InputPathError(
            f"the artifact's source model '{path}' is gone; litert-torch converts from the PyTorch model",
            "restore the model at that path, or re-run edgefg compress from where it is now",
        )
    from edgefg.models.checkpoint import CheckpointSettings
    from edgefg.models.loader import load_model

    if kind == "timm-hub":
        loaded = load_model(path)
    else:  # a bare checkpoint: rebuilt with the model args and input size its compress run recorded
        loaded = load_model(path, arch=src.get("arch"), num_classes=len(manifest.labels), labels=manifest.labels, model_args=src.get("model_args") or {},
                            checkpoint=CheckpointSettings.from_source(src))
    if loaded.num_classes != len(manifest.labels):
        raise ModelLoadError(f"the source model '{path}' has {loaded.num_classes} outputs, the artifact {len(manifest.labels)}", "re-run edgefg compress")
    return loaded.module.eval()


def module_origin(folder: Path, manifest: Any, seen: frozenset[Path] = frozenset()) -> Origin:
    """Which PyTorch module rebuilds the artifact in ``folder``; refuses artifacts that none does."""
    methods = [str(step.get("method")) for step in manifest.compression]
    edits = [m for m in methods if m not in REPRODUCIBLE_STEPS | WEIGHT_STEPS | GRAPH_EDIT_METHODS]
    if edits:
        raise UnsupportedError(
            f"the artifact was changed by {', '.join(edits)}, which litert-torch cannot rebuild from PyTorch weights "
            "(the TFLite converter converts a PyTorch module, not the ONNX graph)",
            "deploy this artifact to an ONNX Runtime or OpenVINO target",
        )
    changed = [m for m in methods if m in WEIGHT_STEPS | GRAPH_EDIT_METHODS]
    if changed:
        needed = ["config.json", "model.safetensors"] + ([GRAPH_EDIT_CONFIG, GRAPH_EDIT_WEIGHTS] if _graph_edited(manifest) else [])
        missing = [f"{ARTIFACT_TORCH_DIR}/{f}" for f in needed if f"{ARTIFACT_TORCH_DIR}/{f}" not in manifest.files]
        if missing:
            raise UnsupportedError(
                f"the artifact was changed by {', '.join(changed)} but holds no PyTorch weights ({', '.join(missing)}); "
                "the TFLite converter builds from them",
                "re-run edgefg compress with this edgefg (it keeps them in the artifact), or deploy to an ONNX Runtime/OpenVINO target",
            )
        return Origin("weights", folder, manifest)
    src = manifest.source or {}
    if src.get("type") == "edgefg-artifact":  # compressed from another artifact (e.g. prune + distil, then INT8)
        from edgefg.manifest import MANIFEST_NAME, load_manifest

        prev = Path(str(src.get("path") or ""))
        here = seen | {folder.resolve()}
        if prev.resolve() in here:
            raise ModelLoadError(f"the artifact's source '{prev}' leads back to itself", "re-run edgefg compress from the PyTorch model")
        if not (prev / MANIFEST_NAME).is_file():
            raise InputPathError(
                f"the artifact was compressed from the artifact '{prev}', which is gone; litert-torch converts from its PyTorch model",
                "restore that artifact at that path, or re-run edgefg compress from the PyTorch model",
            )
        return module_origin(prev, load_manifest(prev), here)  # its checksums are verified
    return Origin("source", folder, manifest)


def _graph_edited(manifest: Any) -> bool:
    """True when a step of the artifact wrapped the ViT (token reduction, ILA adapters)."""
    return any(str(step.get("method")) in GRAPH_EDIT_METHODS for step in manifest.compression)


def artifact_module(folder: Path, manifest: Any) -> Any:
    """The artifact's own (pruned, distilled, token-reduced, adapted) PyTorch module from ``pytorch/``
    (safetensors and JSON; no pickle)."""
    from edgefg.models.loader import load_graph_edit, load_model

    weights = folder / ARTIFACT_TORCH_DIR
    try:
        loaded = load_model(weights)
        if _graph_edited(manifest):
            loaded.module = load_graph_edit(loaded.module, weights)
    except (ModelLoadError, UnsupportedError) as exc:
        raise ModelLoadError(f"the artifact's PyTorch weights '{weights}' cannot be rebuilt: {exc.message}",
                             "the artifact was edited after compress: re-run edgefg compress, then deploy") from None
    if loaded.num_classes != len(manifest.labels):
        raise ModelLoadError(f"the artifact's PyTorch weights '{weights}' have {loaded.num_classes} outputs, the artifact {len(manifest.labels)}",
                             "re-run edgefg compress")
    return loaded.module.eval()


def rebuild_module(origin: Origin) -> Any:
    """The PyTorch module ``origin`` names (eval mode, export-friendly layers)."""
    return artifact_module(origin.folder, origin.manifest) if origin.kind == "weights" else source_module(origin.manifest)


def static_position_embeddings(module: Any, input_size: tuple[int, int]) -> Any:
    """``module`` with every timm ViT in it that has ``dynamic_img_size`` switched to its static form
    when its patch grid fits ``input_size`` (eager outputs are unchanged: timm resamples only to
    another grid; under torch.export it resamples always, with an antialiased bicubic op LiteRT cannot
    lower). A ViT built for another input size really resamples at every call: refused in one line."""
    try:
        from timm.layers import Format
        from timm.models.vision_transformer import VisionTransformer
    except ModuleNotFoundError:  # pragma: no cover - the module was built by timm
        return module
    for vit in (m for m in module.modules() if isinstance(m, VisionTransformer) and m.dynamic_img_size):
        pe = vit.patch_embed
        if pe.img_size is None or tuple(pe.img_size) != tuple(input_size) or pe.dynamic_img_pad:
            raise UnsupportedError(
                f"the ViT is built for {pe.img_size} input and resamples its position embeddings to {tuple(input_size)} at every call "
                "(dynamic_img_size); LiteRT has no lowering for that antialiased bicubic resampling",
                f"save the ViT at its input size (\"model_args\": {{\"img_size\": {input_size[0]}}} in config.json, position embeddings "
                "for that grid), or deploy to an ONNX Runtime or OpenVINO target",
            )
        vit.dynamic_img_size = False
        pe.flatten, pe.output_fmt, pe.strict_img_size = True, Format.NCHW, True
    return module


def _check_source(module: Any, torch: Any, artifact_onnx: Path, manifest: Any, samples: np.ndarray | None, what: str = "") -> float:
    """``module`` must still equal the artifact's ONNX: FP32 to ``SOURCE_TOLERANCE``, INT8 (the module
    is the FP32 model it was quantized from) to ``INT8_SOURCE_TOLERANCE``; a mismatch (weights
    edited since compress) is refused. Returns the relative difference."""
    import onnxruntime as ort

    tol = INT8_SOURCE_TOLERANCE if manifest.precision == "int8" else SOURCE_TOLERANCE
    h, w = manifest.preprocess.input_size
    x = samples[:CHECK_SAMPLES] if samples is not None else np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    session = ort.InferenceSession(str(artifact_onnx), providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        try:
            got = module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        except Exception as exc:  # a rebuilt module whose layer widths do not fit each other
            raise ModelLoadError(f"{what or 'the source model'} does not run on the artifact's input: {_short(exc)}", "re-run edgefg compress, then deploy") from None
    err = float(np.abs(got - ref).max()) / max(float(np.ptp(ref)), 1e-6) if got.shape == ref.shape else float("inf")
    if err > tol:
        raise ModelLoadError(
            f"{what or 'the source model'} no longer matches the artifact '{artifact_onnx.parent.name}' "
            f"({manifest.precision}; relative difference {err:.2g} > {tol:g})",
            "it changed after compress: re-run edgefg compress, then deploy",
        )
    return err


def _check_request(req: ConvertRequest) -> Origin:
    """Precision refusals, then which PyTorch module rebuilds the artifact (before any heavy import)."""
    art = req.manifest
    if art.precision == "int8" and req.precision != "int8":
        raise TargetError(
            f"the artifact is INT8; it cannot be deployed as {req.precision}",
            f"compress with --recipe fp32 and deploy that with --precision {req.precision}",
        )
    if req.precision not in ("fp32", "fp16", "int8"):
        raise TargetError(f"TFLite has no '{req.precision}' conversion", "use --precision fp32, fp16 or int8")
    if req.precision == "int8" and (req.samples is None or req.options.get("samples_source") == "random inputs"):  # calibration and the INT8 check
        raise DataError("INT8 TFLite needs calibration images", "pass --data DIR (an ImageFolder of your classes)")
    return module_origin(req.src.parent, art)


def _single_input(module: Any, torch: Any) -> Any:
    """``module`` behind a plain ``forward(x)`` (wrappers such as the NHWC one take ``*args``)."""

    class Single(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    return Single(module).eval()


def _int8_model(litert_torch: Any, torch: Any, module: Any, example: Any, calib: np.ndarray) -> Any:
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    with torch.no_grad():
        try:  # a dynamic batch axis lets calibration run in batches (observer overhead is per call)
            batch = torch.export.Dim("batch", min=1, max=CALIB_BATCH)
            graph = torch.export.export(_single_input(module, torch), (example.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},)).module()
            step = CALIB_BATCH
        except Exception as exc:  # models with batch-specialised code: one image per call
            log.info("calibrating one image at a time (dynamic-batch export failed: %s)", _short(exc))
            graph, step = torch.export.export(module, (example,)).module(), 1
        prepared = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
        for i in track(range(0, len(calib), step), f"LiteRT INT8 calibration ({len(calib)} images)"):
            prepared(torch.from_numpy(np.ascontiguousarray(calib[i : i + step])))
        converted = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
        converted.training = False  # litert-torch reads the flag; the graph is already in eval form
    with activity("LiteRT conversion (litert-torch, INT8)"), stdout_to_stderr(), native_logs_silenced():
        return litert_torch.convert(converted, (example,), quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))


def _classifier_path(module: Any, torch: Any, num_classes: int) -> str:
    """The dotted name of the final linear classifier: timm's ``get_classifier()`` when it is a Linear,
    else the last ``nn.Linear`` with ``num_classes`` outputs (e.g. inside a graph-edit wrapper)."""
    names = {id(m): n for n, m in module.named_modules()}
    get = getattr(module, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, torch.nn.Linear) and id(head) in names and names[id(head)]:
        return names[id(head)]
    linear = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes and n]
    if not linear:
        raise UnsupportedError("no final linear classifier (nn.Linear) in the PyTorch model: cannot export an embedding for LiteRT",
                               "deploy without --embedding (enrolment needs a model whose last layer is a linear classifier)")
    return linear[-1]


def with_embedding(module: Any, torch: Any, num_classes: int, samples: np.ndarray) -> Any:
    """A module returning (scores, embedding): ``module`` with its final linear classifier replaced by
    Identity (the body), then that classifier. Refused when body + classifier is not ``module`` (an op
    after the classifier, e.g. a softmax, or a classifier that is not the last layer)."""
    path = _classifier_path(module, torch, num_classes)
    body = copy.deepcopy(module)
    parent_name, _, leaf = path.rpartition(".")
    parent = body.get_submodule(parent_name) if parent_name else body
    head = getattr(parent, leaf)
    setattr(parent, leaf, torch.nn.Identity())

    class WithEmbedding(torch.nn.Module):
        def __init__(self, body: Any, head: Any) -> None:
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x):
            e = self.body(x)
            return self.head(e), e

    split = WithEmbedding(body, head).eval()
    x = torch.from_numpy(np.ascontiguousarray(samples[:CHECK_SAMPLES], dtype=np.float32))
    with torch.no_grad():
        try:
            want = module(x).numpy()
            got, emb = (t.numpy() for t in split(x))
        except Exception as exc:
            raise UnsupportedError(f"the PyTorch model cannot be split at its classifier '{path}': {_short(exc)}",
                                   "deploy without --embedding") from None
    err = float(np.abs(got - want).max()) / max(float(np.ptp(want)), 1e-6) if got.shape == want.shape else float("inf")
    if err > SOURCE_TOLERANCE or emb.ndim != 2:
        raise UnsupportedError(f"the classifier '{path}' is not the PyTorch model's last layer (body + classifier differ from the model "
                               f"by {err:.2g}, embedding shape {list(emb.shape)}): cannot export an embedding for LiteRT",
                               "deploy without --embedding")
    return split


def _fp16_bytes(fp32: bytes) -> bytes:
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its summary and progress bar
        return translate_recipe.quantize_model(fp32, recipe)


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


@register("onnx", "tflite", "rebuild the artifact's PyTorch model (its own pruned/distilled/token-reduced weights, or its source) and convert it with litert-torch (fp32, fp16, PT2E int8)", calibrates=True)
def onnx_to_tflite(req: ConvertRequest) -> ConvertResult:
    from edgefg.runtime.backends.tflite import inspect_tflite

    origin = _check_request(req)
    litert_torch, torch = _litert()
    module = static_position_embeddings(rebuild_module(origin), tuple(req.manifest.preprocess.input_size))
    what = origin.describe()
    err = _check_source(module, torch, origin.folder / origin.manifest.model_file, origin.manifest, req.samples, what)
    if origin.folder != req.src.parent:  # rebuilt from the artifact this one was compressed from: check against this one too
        _check_source(module, torch, req.src, req.manifest, req.samples, what)
    embedding = next((o for o in req.manifest.outputs[1:] if o.role == "embedding"), None)
    if embedding is not None:  # deploy --embedding: (scores, the classifier's input)
        h, w = req.manifest.preprocess.input_size
        check = req.samples if req.samples is not None else np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
        module = with_embedding(module, torch, len(req.manifest.labels), check)
    pre = copy.deepcopy(req.manifest.preprocess)
    h, w = pre.input_size
    nhwc = (req.target.layout or "NCHW").upper() == "NHWC"
    if nhwc:
        module = litert_torch.to_channel_last_io(module, args=[0]).eval()
    example = torch.zeros(1, h, w, 3) if nhwc else torch.zeros(1, 3, h, w)
    notes: list[str] = [f"converted from {what} (checked against the {origin.manifest.precision} ONNX of "
                        f"'{origin.folder.name}': relative difference {err:.2g})"]
    out = req.out_dir / FORMATS["tflite"].model_file
    try:
        if req.precision == "int8":
            calib = np.moveaxis(req.samples, 1, -1) if nhwc else req.samples
            model = _int8_model(litert_torch, torch, module, example, calib.astype(np.float32))
            out.write_bytes(model.model_content())
            notes.append(
                f"INT8 by PT2E (symmetric int8, per-channel weights) calibrated on {len(calib)} images "
                f"({req.options.get('samples_source', 'deploy samples')}); the artifact's NNCF INT8 parameters are not reused"
            )
        else:
            with torch.no_grad(), activity(f"LiteRT conversion (litert-torch, {req.precision})"), stdout_to_stderr(), native_logs_silenced():
                content = litert_torch.convert(module, (example,)).model_content()
            out.write_bytes(_fp16_bytes(content) if req.precision == "fp16" else content)
            if req.precision == "fp16":
                notes.append("FP16 weights (dequantized to float at load; compute and I/O stay float32)")
    except (DataError, UnsupportedError):
        raise
    except Exception as exc:  # torch.export / lowering / quantizer failures: name the step and the cause
        raise UnsupportedError(
            f"litert-torch cannot convert this model to {req.precision} TFLite: {_short(exc)}",
            "deploy to an ONNX Runtime or OpenVINO target instead, or report the model architecture",
        ) from None

    info = inspect_tflite(str(out), max_outputs=2 if embedding is not None else 1)
    outputs = list(info.outputs)
    if embedding is not None:
        outputs = _embedding_outputs(info, embedding)
        emb = outputs[1]
        notes.append(f"embedding output '{emb.name}' (width {emb.shape[-1]}, {emb.dtype}"
                     + (f", scale {emb.quant_scale:.4g}, zero point {emb.quant_zero_point}" if emb.quant_scale is not None else "") + ")")
    float_ops = info.ops.get("DEQUANTIZE", 0) if req.precision == "int8" else 0
    if float_ops:
        notes.append(f"{float_ops} tensors are dequantized to float between int8 ops (fine for XNNPACK; splits Edge TPU/NPU delegate graphs)")
    pre.layout = info.layout or ("NHWC" if nhwc else "NCHW")
    pre.dtype = info.input.dtype
    pre.quant_scale, pre.quant_zero_point = info.input.quant_scale, info.input.quant_zero_point
    return ConvertResult(out.name, notes=notes, preprocess=pre, inputs=[info.input], outputs=outputs)


def _embedding_outputs(info: Any, embedding: Any) -> list[Any]:
    """The converted file's (scores, embedding) specs, the second marked role "embedding"; its width
    must be the ONNX embedding's."""
    import dataclasses

    if len(info.outputs) != 2:
        raise UnsupportedError(f"the converted model has {len(info.outputs)} output(s), not (scores, embedding)", "deploy without --embedding")
    scores, emb = info.outputs
    width = embedding.shape[-1] if embedding.shape else None
    if isinstance(width, int) and emb.shape[-1] != width:
        raise UnsupportedError(f"the LiteRT embedding has width {emb.shape[-1]}, the ONNX one {width}", "deploy without --embedding")
    return [scores, dataclasses.replace(emb, role="embedding")]
