"""ViT token reduction with static shapes: EViT-style top-k, ToMe-style merging, CLCA.

Works on timm ``VisionTransformer`` models with standard ``Block``/``Attention`` layers (vit_*,
deit_*, test_vit). :class:`TokenViT` wraps the original model (its weights are shared, not
copied) and runs the blocks itself so it can act between attention and MLP of chosen blocks:

* **EViT** — rank patch tokens by the CLS token's attention (mean over heads), keep the top
  ``ceil(keep·N)`` and fuse the rest into one token, weighted by that attention.
* **ToMe** — bipartite soft matching: alternate tokens into sets A and B, match each A token to its
  most similar B token (cosine of keys averaged over heads), merge the ``N - ceil(keep·N)`` best
  pairs by size-weighted average, track token sizes and add ``log(size)`` to the attention logits
  (proportional attention) in every later block.
* **CLCA** (``clca=True``) — Cross-Layer Cache: a learnable carrier token rides in the sequence;
  after each block before the last recovery block the mean of the patch tokens and the carrier
  token are cached; at each recovery block the cached tokens are concatenated to the sequence as
  extra keys/values for that block's attention (and dropped after it, so the shapes stay fixed).
  Cross-Layer Aggregation head: the CLS tokens after every reduction block and after the last block
  (L×D) go through BN → grouped Conv1d(D→2D, kernel L, groups D) → BN → GELU → Conv1d(2D→classes);
  its logits are added to the original head's (last conv zero-initialised, so an untrained CLCA
  model equals the token-reduced model and fine-tuning starts from there).

Every keep count is computed once from the static token count, so the exported graph has static
shapes (TopK with a constant k, GatherElements; ToMe's merge is a one-hot MatMul, not a scatter,
so EViT and ToMe graphs also convert to LiteRT).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgefg.errors import UnsupportedError

SUPPORTED = "timm VisionTransformer models (vit_*, deit_*, test_vit) with standard Block/Attention layers"
METHODS = ("evit", "tome")


@dataclass
class TokenOptions:
    keep: float = 0.5  # keep rate at each reduction block
    method: str = "evit"  # evit | tome
    at: Sequence[int] | None = None  # 0-based reduction blocks; default ≈ depth/4, depth/2, 3·depth/4
    clca: bool = False
    recovery: Sequence[int] | None = None  # CLCA recovery blocks; default: the reduction blocks + the one after the last


def default_blocks(depth: int) -> list[int]:
    blocks = sorted({max(1, round(depth * f)) for f in (0.25, 0.5, 0.75)})
    return [b for b in blocks if b < depth] or [depth - 1]


def check_vit(model) -> None:
    try:
        from timm.models.vision_transformer import Attention, Block, VisionTransformer
    except ModuleNotFoundError:  # pragma: no cover
        raise UnsupportedError("token reduction needs timm") from None
    if not isinstance(model, VisionTransformer):
        raise UnsupportedError(f"token reduction / adapters support {SUPPORTED}; got {type(model).__name__}", "use a vit_* or deit_* model")
    for blk in model.blocks:
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise UnsupportedError(f"block type {type(blk).__name__} is not supported", f"supported: {SUPPORTED}")
    if getattr(model, "global_pool", "token") != "token" or getattr(model, "attn_pool", None) is not None:
        raise UnsupportedError("token reduction needs a CLS-token ViT (global_pool='token')", f"supported: {SUPPORTED}")


def attention(attn_mod, x, size=None, extra=None):
    """timm Attention, unfused, returning (output, attention probs, keys).

    ``size`` (B, N): token sizes for proportional attention (log size added to the logits).
    ``extra`` (B, M, C): tokens that act only as extra keys/values (CLCA recovery)."""
    import torch

    B, N, C = x.shape
    src = x if extra is None else torch.cat([x, extra], dim=1)
    M = src.shape[1]
    qkv = attn_mod.qkv(src).reshape(B, M, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    q = q[:, :, :N]
    logits = (q * attn_mod.scale) @ k.transpose(-2, -1)
    if size is not None:
        log_size = size.log()
        if extra is not None:
            log_size = torch.cat([log_size, log_size.new_zeros(B, M - N)], dim=1)
        logits = logits + log_size[:, None, None, :]
    probs = logits.softmax(dim=-1)
    out = attn_mod.attn_drop(probs) @ v
    out = out.transpose(1, 2).reshape(B, N, -1)
    out = attn_mod.norm(out)
    out = attn_mod.proj_drop(attn_mod.proj(out))
    return out, probs[..., :N], k[:, :, :N]


def evit_reduce(x, probs, n_prefix: int, keep: int):
    """Keep the ``keep`` patch tokens the CLS token attends to most; fuse the rest into one token."""
    import torch

    prefix, patches = x[:, :n_prefix], x[:, n_prefix:]
    n = patches.shape[1]
    if keep >= n:
        return x
    cls_attn = probs[:, :, 0, n_prefix:].mean(dim=1)  # (B, n)
    order = torch.topk(cls_attn, n, dim=1).indices  # sorted, descending (TopK: exports to ONNX and TFLite)
    kept_idx, rest_idx = order[:, :keep], order[:, keep:]
    C = x.shape[-1]
    kept = torch.gather(patches, 1, kept_idx.unsqueeze(-1).expand(-1, -1, C))
    rest = torch.gather(patches, 1, rest_idx.unsqueeze(-1).expand(-1, -1, C))
    w = torch.gather(cls_attn, 1, rest_idx).unsqueeze(-1)
    fused = (rest * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.cat([prefix, kept, fused], dim=1)


def tome_merge(x, keys, size, n_prefix: int, r: int):
    """Bipartite soft matching: merge ``r`` tokens of set A (even patch positions) into their most
    similar token of set B (odd positions) by size-weighted average; returns (x, size)."""
    import torch

    if r <= 0:
        return x, size
    metric = keys.mean(dim=1)  # (B, N, head_dim), keys averaged over heads
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    B, N, C = x.shape
    pa, pb = metric[:, n_prefix::2], metric[:, n_prefix + 1 :: 2]
    r = min(r, pa.shape[1])
    scores = pa @ pb.transpose(-1, -2)  # (B, Na, Nb)
    node_max, node_idx = scores.max(dim=-1)
    edge = torch.topk(node_max, node_max.shape[-1], dim=-1).indices
    src_idx, unm_idx = edge[:, :r], edge[:, r:]
    dst_idx = torch.gather(node_idx, 1, src_idx)

    xs = x * size.unsqueeze(-1)  # merge weighted sums, then divide by the merged size
    prefix, xa, xb = xs[:, :n_prefix], xs[:, n_prefix::2], xs[:, n_prefix + 1 :: 2]
    s_prefix, sa, sb = size[:, :n_prefix], size[:, n_prefix::2], size[:, n_prefix + 1 :: 2]
    unm = torch.gather(xa, 1, unm_idx.unsqueeze(-1).expand(-1, -1, C))
    src = torch.gather(xa, 1, src_idx.unsqueeze(-1).expand(-1, -1, C))
    # scatter-add as a one-hot matmul: (B, Nb, r) @ (B, r, C); no ScatterElements in the graph, which
    # LiteRT's STABLEHLO_SCATTER refuses and TensorRT runs slowly; r·Nb·C MACs are negligible
    onehot = (dst_idx.unsqueeze(-1) == torch.arange(xb.shape[1], device=x.device)).to(x.dtype).transpose(1, 2)
    xb = xb + onehot @ src
    s_unm = torch.gather(sa, 1, unm_idx)
    sb = sb + (onehot @ torch.gather(sa, 1, src_idx).unsqueeze(-1)).squeeze(-1)
    new_size = torch.cat([s_prefix, s_unm, sb], dim=1)
    new_x = torch.cat([prefix, unm, xb], dim=1) / new_size.unsqueeze(-1)
    return new_x, new_size


def _nn():
    import torch.nn as nn

    return nn


class CLAHead:  # namespace for the factory below (keeps torch lazy at import time)
    @staticmethod
    def build(dim: int, layers: int, classes: int):
        nn = _nn()

        class _Head(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bn1 = nn.BatchNorm1d(dim)
                self.conv1 = nn.Conv1d(dim, 2 * dim, kernel_size=layers, groups=dim)
                self.bn2 = nn.BatchNorm1d(2 * dim)
                self.act = nn.GELU()
                self.conv2 = nn.Conv1d(2 * dim, classes, kernel_size=1)
                nn.init.zeros_(self.conv2.weight)
                nn.init.zeros_(self.conv2.bias)

            def forward(self, tokens):  # (B, D, L)
                y = self.act(self.bn2(self.conv1(self.bn1(tokens))))
                return self.conv2(y).flatten(1)

        return _Head()


def build_token_vit(model, opts: TokenOptions):
    """Wrap a timm ViT with token reduction (and CLCA); the wrapped model's weights are shared."""
    import torch
    import torch.nn as nn

    check_vit(model)
    if opts.method not in METHODS:
        raise UnsupportedError(f"unknown token method '{opts.method}'", f"use one of: {', '.join(METHODS)}")
    if not 0.0 < opts.keep <= 1.0:
        raise UnsupportedError(f"token keep rate {opts.keep} is outside (0, 1]", "pass e.g. --token-keep 0.5")
    depth = len(model.blocks)
    at = sorted(set(opts.at)) if opts.at else default_blocks(depth)
    if any(b < 0 or b >= depth for b in at):
        raise UnsupportedError(f"reduction blocks {at} outside 0..{depth - 1}", f"the model has {depth} blocks")
    n_prefix = model.num_prefix_tokens
    n_patches = int(model.patch_embed.num_patches)

    # static token plan
    plan: dict[int, int] = {}
    n = n_patches
    for b in at:
        target = math.ceil(opts.keep * n)
        if opts.method == "evit":
            plan[b] = target  # kept tokens; +1 fused token when anything was dropped
            n = target + (1 if target < n else 0)
        else:
            r = n - target
            na = (n + 1) // 2
            if r > na:
                raise UnsupportedError(
                    f"ToMe can merge at most half the tokens per block (keep {opts.keep} asks for {r} of {n})",
                    "use --token-keep ≥ 0.5 with tome, or reduce at more blocks",
                )
            plan[b] = r
            n = n - r
    recovery = sorted(set(opts.recovery)) if opts.recovery else sorted(set(at) | {min(at[-1] + 1, depth - 1)})

    class TokenViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = model
            self.method, self.keep, self.at, self.plan = opts.method, opts.keep, at, plan
            # the resolved options: what rebuilds this wrapper around the same ViT (saved with the artifact)
            self.options = TokenOptions(opts.keep, opts.method, list(at), opts.clca, list(recovery) if opts.clca else None)
            self.clca = opts.clca
            self.n_prefix = n_prefix
            self.final_tokens = n
            if opts.clca:
                self.recovery = recovery
                self.carrier = nn.Parameter(torch.zeros(1, 1, model.embed_dim))
                nn.init.trunc_normal_(self.carrier, std=0.02)
                self.cla_head = CLAHead.build(model.embed_dim, len(at) + 1, model.num_classes)
                self.fresh_prefixes = ("cla_head.",)  # its BatchNorms learn statistics while fine-tuning

        def forward(self, x):
            vit = self.vit
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
            B = x.shape[0]
            n_fixed = self.n_prefix
            if self.clca:  # carrier token after the prefix: never reduced
                x = torch.cat([x[:, : self.n_prefix], self.carrier.expand(B, -1, -1), x[:, self.n_prefix :]], dim=1)
                n_fixed += 1
            size = x.new_ones(B, x.shape[1]) if self.method == "tome" else None
            cache: list[Any] = []
            cls_tokens = []
            last_recovery = max(self.recovery) if self.clca else -1
            for i, blk in enumerate(vit.blocks):
                extra = torch.cat(cache, dim=1) if (self.clca and i in self.recovery and cache) else None
                out, probs, keys = attention(blk.attn, blk.norm1(x), size, extra)
                x = x + blk.drop_path1(blk.ls1(out))
                if i in self.plan:
                    if self.method == "evit":
                        x = evit_reduce(x, probs, n_fixed, self.plan[i])
                    else:
                        x, size = tome_merge(x, keys, size, n_fixed, self.plan[i])
                x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
                if self.clca and i < last_recovery:
                    cache.append(torch.cat([x[:, n_fixed:].mean(dim=1, keepdim=True), x[:, n_fixed - 1 : n_fixed]], dim=1))
                if self.clca and i in self.plan:
                    cls_tokens.append(x[:, 0])
            x = vit.norm(x)
            logits = vit.forward_head(x[:, : self.n_prefix])
            if self.clca:
                cls_tokens.append(x[:, 0])
                stack = torch.stack([vit.norm(t) for t in cls_tokens[:-1]] + [cls_tokens[-1]], dim=-1)  # (B, D, L)
                logits = logits + self.cla_head(stack)
            return logits

    wrapped = TokenViT()
    wrapped.eval()
    return wrapped


def describe(wrapped, opts: TokenOptions) -> dict[str, Any]:
    return {
        "method": f"token-reduction-{opts.method}",
        "keep": opts.keep,
        "blocks": list(wrapped.at),
        "plan": {str(k): v for k, v in wrapped.plan.items()},
        "final_patch_tokens": wrapped.final_tokens,
        "clca": bool(opts.clca),
        "recovery_blocks": list(getattr(wrapped, "recovery", [])),
    }


def graph_ops(onnx_path) -> dict[str, Any]:
    """Op types of an exported graph, flagging the data-dependent indexing ops a target must support."""
    import onnx

    ops = sorted({n.op_type for n in onnx.load(str(onnx_path)).graph.node})
    indexing = [o for o in ops if o in ("TopK", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Gather", "NonZero")]
    return {"ops": ops, "indexing_ops": indexing}


def check_runtimes(onnx_path, input_size: tuple[int, int], reference_logits=None) -> dict[str, Any]:
    """Run the exported graph once on ONNX Runtime and OpenVINO; report success and agreement."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((2, 3, *input_size)).astype(np.float32)
    result: dict[str, Any] = {}
    outs = {}
    try:
        import onnxruntime as ort

        s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        outs["onnxruntime"] = s.run(None, {s.get_inputs()[0].name: x})[0]
        result["onnxruntime"] = "ok"
    except Exception as exc:  # report, don't crash: this is a compatibility check
        result["onnxruntime"] = f"failed: {str(exc).splitlines()[0][:200]}"
    try:
        import openvino as ov

        core = ov.Core()
        c = core.compile_model(core.read_model(str(onnx_path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs["openvino"] = c(x)[0]
        result["openvino"] = "ok"
    except Exception as exc:
        result["openvino"] = f"failed: {str(exc).splitlines()[0][:200]}"
    if len(outs) == 2:
        result["max_abs_diff_ort_vs_openvino"] = float(np.abs(outs["onnxruntime"] - outs["openvino"]).max())
    return result
