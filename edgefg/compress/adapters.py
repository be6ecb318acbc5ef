"""ILA down-sampling inter-layer adapters for timm ViTs.

The backbone is frozen; adapters inserted after chosen blocks (and the classifier) are the only
trained parts. Each adapter maps a (1 + H·W)-token sequence to (1 + (H-2)·(W-2)) tokens:

* main branch: Linear(D→d) → BN → GELU → patch tokens as a d×H×W map → depthwise 3×3 conv without
  padding (H, W shrink by 2) → BN → GELU → 1×1 conv; the CLS token goes through its own 1×1
  conv; concatenate → BN → GELU → Linear(d→D);
* residual branch: depthwise 3×3 conv without padding on the D×H×W patch map (CLS unchanged);
* output = residual + dropout(main).

Initialisation (edgefg's choice, so a short fine-tune starts from the frozen model's behaviour):
the residual depthwise kernel is the identity (centre tap 1 — a crop of the token grid) and the
main branch's last Linear is zero. Later blocks see fewer tokens, so they cost less; all shapes
are static and every BatchNorm folds at export.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgefg.compress import ILA_DEFAULT_AT
from edgefg.compress.tokens import check_vit
from edgefg.errors import UnsupportedError


@dataclass
class AdapterOptions:
    at: Sequence[int] = ILA_DEFAULT_AT  # 0-based blocks after which an adapter is inserted
    dim: int = 8  # bottleneck width d
    dropout: float = 0.1


def _adapter(D: int, d: int, grid: tuple[int, int], dropout: float):
    import torch
    import torch.nn as nn

    class ILAAdapter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grid = grid
            self.down = nn.Linear(D, d)
            self.bn_down = nn.BatchNorm1d(d)
            self.dw = nn.Conv2d(d, d, 3, groups=d, bias=False)
            self.bn_dw = nn.BatchNorm2d(d)
            self.pw = nn.Conv2d(d, d, 1)
            self.cls_pw = nn.Conv1d(d, d, 1)
            self.bn_cat = nn.BatchNorm1d(d)
            self.up = nn.Linear(d, D)
            self.res_dw = nn.Conv2d(D, D, 3, groups=D, bias=False)
            self.act = nn.GELU()
            self.drop = nn.Dropout(dropout)
            with torch.no_grad():
                self.res_dw.weight.zero_()
                self.res_dw.weight[:, 0, 1, 1] = 1.0
                self.up.weight.zero_()
                self.up.bias.zero_()

        def forward(self, x):  # (B, 1 + H·W, D)
            B, N, C = x.shape
            h, w = self.grid
            y = self.down(x)  # (B, N, d)
            y = self.act(self.bn_down(y.transpose(1, 2)))  # (B, d, N)
            cls, patches = y[:, :, :1], y[:, :, 1:].reshape(B, -1, h, w)
            patches = self.pw(self.act(self.bn_dw(self.dw(patches)))).flatten(2)  # (B, d, (h-2)(w-2))
            y = torch.cat([self.cls_pw(cls), patches], dim=2)
            y = self.up(self.act(self.bn_cat(y)).transpose(1, 2))  # (B, N', D)
            res = self.res_dw(x[:, 1:].transpose(1, 2).reshape(B, C, h, w)).flatten(2).transpose(1, 2)
            res = torch.cat([x[:, :1], res], dim=1)
            return res + self.drop(y)

    return ILAAdapter()


def build_ila_vit(model, opts: AdapterOptions):
    """Wrap a timm ViT with ILA adapters; returns the wrapper (backbone weights shared)."""
    import torch.nn as nn

    check_vit(model)
    if model.num_prefix_tokens != 1:
        raise UnsupportedError("ILA adapters need exactly one prefix (CLS) token", "use a vit_*/deit_* model without register tokens")
    depth = len(model.blocks)
    at = sorted(set(int(a) for a in opts.at))
    if not at or any(a < 0 or a >= depth - 1 for a in at):
        raise UnsupportedError(f"adapter positions {list(at)} must lie in 0..{depth - 2}", f"the model has {depth} blocks; e.g. --adapter-at 3,7 for 12")
    h, w = model.patch_embed.grid_size
    grids = {}
    for a in at:
        if h < 3 or w < 3:
            raise UnsupportedError(f"token grid {h}×{w} too small for another adapter at block {a}", "use fewer adapters or a larger input")
        grids[a] = (h, w)
        h, w = h - 2, w - 2

    class ILAViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = model
            self.at = at
            self.adapters = nn.ModuleDict({str(a): _adapter(model.embed_dim, opts.dim, grids[a], opts.dropout) for a in at})
            self.final_grid = (h, w)
            self.options = AdapterOptions(tuple(at), opts.dim, opts.dropout)  # what rebuilds this wrapper (saved with the artifact)

        def forward(self, x):
            vit = self.vit
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
            for i, blk in enumerate(vit.blocks):
                x = blk(x)
                if str(i) in self.adapters:
                    x = self.adapters[str(i)](x)
            return vit.forward_head(vit.norm(x))

    wrapped = ILAViT()
    wrapped.eval()
    return wrapped


def trainable_prefixes(wrapped) -> list[str]:
    """Parameter-name prefixes that ILA trains: the adapters and the classifier."""
    head = [n for n, _ in wrapped.named_parameters() if n.startswith("vit.head.") or n.startswith("vit.fc_norm.")]
    return ["adapters."] + sorted({".".join(n.split(".")[:2]) + "." for n in head})


def describe(wrapped) -> dict[str, Any]:
    total = sum(p.numel() for p in wrapped.parameters())
    prefixes = trainable_prefixes(wrapped)
    trainable = sum(p.numel() for n, p in wrapped.named_parameters() if any(n.startswith(t) for t in prefixes))
    return {
        "method": "ila-adapters",
        "blocks": list(wrapped.at),
        "final_grid": list(wrapped.final_grid),
        "params_total": int(total),
        "params_trainable": int(trainable),
        "trainable_fraction": trainable / max(1, total),
    }
