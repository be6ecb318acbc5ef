"""Structured pruning with Torch-Pruning's dependency graph.

CNNs: channel pruning (coupled channels — residual adds, depthwise convs, SE blocks — go
together) by group L2 magnitude; the classifier keeps its outputs. ViTs (timm VisionTransformer):
whole attention heads and MLP hidden units; the embedding width (residual stream) is kept so
position embeddings and the CLS token need no surgery. The pruned module is a plain, smaller
nn.Module: it exports to ONNX like the original.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edgefg.errors import MissingDependencyError, UnsupportedError
from edgefg.progress import track

log = logging.getLogger(__name__)


@dataclass
class PruneOptions:
    ratio: float = 0.3
    round_to: int | None = None  # keep channel counts multiples of this (hardware friendly)
    importance: str = "auto"  # auto (taylor with data, else magnitude) | taylor | magnitude | lamp | random
    iterative_steps: int = 5  # taylor: prune in steps, re-computing gradients in between
    global_pruning: bool = False  # one importance ranking over all layers (uneven per-layer ratios) vs the same ratio per layer
    bn_recalibrate: bool = True  # re-estimate BatchNorm statistics on the user's images after pruning (when given)


def prune_schedule(ratio: float, rounds: int = 1, epochs: int | None = None) -> list[dict[str, Any]]:
    """Recipe steps for pruning ``ratio`` of the channels in ``rounds`` rounds, each followed by
    distillation from the unpruned model: a per-round ratio that compounds to ``ratio``
    (1 - (1 - r)^rounds = ratio) and ``epochs`` distillation epochs in all (default: one per round),
    a fifth after each intermediate round and the rest after the last — the schedule that kept
    EfficientNet-Lite0 within a point at 20 % (README, ``benchmarks/cnn_recovery.py``)."""
    if not 0.0 < ratio < 1.0:
        raise UnsupportedError(f"prune ratio {ratio} is outside (0, 1)", "pass e.g. --prune 0.3")
    if rounds < 1:
        raise UnsupportedError(f"prune rounds must be ≥ 1 (got {rounds})", "pass e.g. --prune-rounds 3")
    total = rounds if epochs is None else epochs
    if rounds == 1:
        return [{"type": "prune", "ratio": ratio}, {"type": "distil", "epochs": max(1, total)}]
    if total < rounds:
        raise UnsupportedError(f"{rounds} pruning rounds need at least {rounds} distillation epochs (got --epochs {total})",
                               f"pass --epochs {rounds} or more (tens of epochs recover best), or fewer --prune-rounds")
    per_round = 1.0 - (1.0 - ratio) ** (1.0 / rounds)
    split = [max(1, total // 5)] * (rounds - 1)
    split.append(max(1, total - sum(split)))
    steps: list[dict[str, Any]] = []
    for e in split:
        steps += [{"type": "prune", "ratio": round(per_round, 6)}, {"type": "distil", "epochs": e}]
    return steps


def is_vit(model) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ModuleNotFoundError:
        return False
    return isinstance(model, VisionTransformer)


def _classifier(model):
    import torch.nn as nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module):
        return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))] or [head]
    return []


def prune(model, input_size: tuple[int, int], opts: PruneOptions, data=None) -> dict[str, Any]:
    """Prune ``model`` in place; return a description (params/MACs before and after, per torch).

    ``data``: an optional (images, labels) batch of the user's data. With it the default importance
    is first-order Taylor (|weight × gradient| of the cross-entropy): on BN-folded models such as the
    dequantized mobilenetv2_cub100, weight magnitude alone ignores the biases a channel carries and
    5% magnitude pruning already collapses top-1 (0.97 → 0.06 on 200 cub100 test images) where
    Taylor keeps 0.93."""
    try:
        import torch
        import torch_pruning as tp
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module(exc.name or "torch_pruning", "compress") from None
    if not 0.0 < opts.ratio < 1.0:
        raise UnsupportedError(f"prune ratio {opts.ratio} is outside (0, 1)", "pass e.g. --prune 0.3")
    kind = opts.importance if opts.importance != "auto" else ("taylor" if data is not None else "magnitude")
    if kind == "taylor" and data is None:
        raise UnsupportedError("Taylor pruning importance needs labelled images", "pass --data DIR, or use importance = \"magnitude\"")
    factories = {
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "random": lambda: tp.importance.RandomImportance(),
    }
    if kind not in factories:
        raise UnsupportedError(f"unknown pruning importance '{kind}'", f"use one of: auto, {', '.join(factories)}")
    importance = factories[kind]()
    steps = max(1, opts.iterative_steps) if kind == "taylor" else 1
    device = next(model.parameters()).device  # prune where the model lives (a CUDA model: gradients on the GPU)
    example = torch.randn(1, 3, *input_size, device=device)
    if data is not None:
        data = (data[0].to(device), data[1].to(device))
    model.eval()
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    ignored = _classifier(model)
    kwargs: dict[str, Any] = {}
    vit = is_vit(model)
    if vit:
        heads = {}
        for blk in model.blocks:
            heads[blk.attn.qkv] = blk.attn.num_heads
            ignored += [blk.attn.proj, blk.mlp.fc2]  # their outputs are the residual stream: keep its width
        ignored.append(model.patch_embed.proj)
        kwargs = dict(num_heads=heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=opts.ratio)
    elif not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        raise UnsupportedError(
            f"structured pruning supports CNNs and timm VisionTransformer models, not {type(model).__name__}",
            "supported families: timm CNNs (resnet, mobilenet, efficientnet, regnet, convnext …) and vit/deit",
        )
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=importance, pruning_ratio=opts.ratio, ignored_layers=ignored, round_to=opts.round_to,
            iterative_steps=steps, global_pruning=opts.global_pruning, **kwargs
        )
        for _ in track(range(steps), f"pruning {opts.ratio:.0%} ({kind} importance, {steps} steps)"):
            if kind == "taylor":
                x, y = data
                model.zero_grad()
                for i in range(0, len(x), 32):  # accumulate gradients in chunks (memory)
                    loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32], reduction="sum") / len(x)
                    loss.backward()
            pruner.step()
        model.zero_grad(set_to_none=True)
    except Exception as exc:  # the dependency tracer fails on some dynamic python
        raise UnsupportedError(f"Torch-Pruning could not prune {type(model).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if vit:
        for blk in model.blocks:
            attn = blk.attn
            attn.num_heads = pruner.num_heads[attn.qkv]
            attn.head_dim = attn.qkv.out_features // (3 * attn.num_heads)
            if hasattr(attn, "attn_dim"):
                attn.attn_dim = attn.num_heads * attn.head_dim
    with torch.no_grad():
        model(example)  # shapes still consistent
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    recalibrated = recalibrate_bn_if_better(model, *data) if opts.bn_recalibrate and data is not None else 0
    return {
        "method": "structured-pruning",
        "library": f"torch-pruning {tp.__version__}",
        "ratio": opts.ratio,
        "importance": kind,
        "iterative_steps": steps,
        "ratios": "global (one ranking over all layers)" if opts.global_pruning else "uniform (same ratio per layer)",
        "bn_recalibrated_layers": recalibrated,
        "scope": "attention heads + MLP hidden units" if vit else "conv channels (dependency groups)",
        "params_before": int(params0),
        "params_after": int(params1),
        "macs_before": int(macs0),
        "macs_after": int(macs1),
    }


def recalibrate_bn(model, images, batch: int = 32) -> int:
    """Re-estimate every BatchNorm's running mean/variance on ``images`` (a cumulative average over
    forward passes in train mode, no gradient): removing channels upstream changes the statistics
    the pruned network's BatchNorms see. Returns the number of BatchNorm layers updated."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
        m.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)
    return len(bns)


def recalibrate_bn_if_better(model, images, labels, batch: int = 32) -> int:
    """Re-calibrate BatchNorm statistics and keep them only when they lower the cross-entropy on the
    user's images. A BN-folded checkpoint (e.g. mobilenetv2_cub100, converted from TFLite) carries
    identity BatchNorms whose "statistics" are part of the folded weights: re-estimating them would
    wreck the network (measured: top-1 0.83 → 0.01 after 10 % pruning), so they are kept as they are.
    Returns the number of BatchNorm layers updated (0 when the re-calibration was not kept)."""
    import torch

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return sum(float(torch.nn.functional.cross_entropy(model(images[i : i + batch]), labels[i : i + batch], reduction="sum"))
                       for i in range(0, len(images), batch)) / len(images)

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    before = loss()
    n = recalibrate_bn(model, images, batch)
    if loss() < before:
        return n
    for m, (mean, var, count) in zip(bns, saved):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)
    log.info("BatchNorm re-calibration did not lower the loss on the given images (BN-folded model?): statistics kept")
    return 0


def pruned_shapes(model) -> dict[str, list[int]]:
    """The layer widths of a (pruned) model, JSON-able: enough to rebuild its structure from the
    unpruned architecture with :func:`apply_shapes` and load a plain safetensors state dict (no
    pickled modules). Conv2d → [in, out, groups], BatchNorm → [features], Linear → [in, out],
    ViT attention → [heads, head_dim] (head pruning changes the count its forward reshapes by)."""
    import torch.nn as nn

    shapes: dict[str, list[int]] = {}
    for name, mod in model.named_modules():
        if _is_attention(mod):
            shapes[name] = [int(mod.num_heads), int(mod.head_dim)]
        elif isinstance(mod, nn.Conv2d):
            shapes[name] = [mod.in_channels, mod.out_channels, mod.groups]
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            shapes[name] = [mod.num_features]
        elif isinstance(mod, nn.Linear):
            shapes[name] = [mod.in_features, mod.out_features]
    return shapes


def _is_attention(mod) -> bool:
    """A timm ViT attention block (its qkv projection is split into ``num_heads`` × ``head_dim``)."""
    return hasattr(mod, "qkv") and isinstance(getattr(mod, "num_heads", None), int) and isinstance(getattr(mod, "head_dim", None), int)


def apply_shapes(model, shapes: dict[str, list[int]]) -> None:
    """Resize ``model``'s layers in place to ``shapes`` (from :func:`pruned_shapes`); the weights
    are left uninitialised: load the pruned state dict afterwards (strict)."""
    import torch
    import torch.nn as nn

    mods = dict(model.named_modules())
    unknown = sorted(set(shapes) - set(mods))
    if unknown:
        raise UnsupportedError(f"pruned shapes name layers the model lacks: {', '.join(unknown[:5])}", "rebuild from the same architecture the model was pruned from")

    def param(*shape: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(*shape))

    kinds = ((nn.Conv2d, 3), (nn.modules.batchnorm._BatchNorm, 1), (nn.Linear, 2))
    for name, shape in shapes.items():
        mod = mods[name]
        want = 2 if _is_attention(mod) else next((n for cls, n in kinds if isinstance(mod, cls)), None)
        if want is not None and not (isinstance(shape, list) and len(shape) == want and all(isinstance(v, int) and v > 0 for v in shape)):
            raise UnsupportedError(f"pruned shape of layer '{name}' is {shape!r}, not {want} positive integers", "re-save the model with edgefg (pruned_shapes)")
        if _is_attention(mod):  # its qkv/proj Linears are resized by their own entries
            mod.num_heads, mod.head_dim = shape
            if hasattr(mod, "attn_dim"):
                mod.attn_dim = mod.num_heads * mod.head_dim
        elif isinstance(mod, nn.Conv2d):
            cin, cout, groups = shape
            mod.in_channels, mod.out_channels, mod.groups = cin, cout, groups
            mod.weight = param(cout, cin // groups, *mod.kernel_size)
            if mod.bias is not None:
                mod.bias = param(cout)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            (n,) = shape
            mod.num_features = n
            if mod.affine:
                mod.weight, mod.bias = param(n), param(n)
            if mod.track_running_stats:
                mod.running_mean = torch.zeros(n)
                mod.running_var = torch.ones(n)
        elif isinstance(mod, nn.Linear):
            cin, cout = shape
            mod.in_features, mod.out_features = cin, cout
            mod.weight = param(cout, cin)
            if mod.bias is not None:
                mod.bias = param(cout)
        else:
            raise UnsupportedError(f"layer '{name}' is a {type(mod).__name__}, not the kind recorded in the pruned shapes")
