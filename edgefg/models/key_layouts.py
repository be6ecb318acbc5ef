"""State-dict layouts of other libraries, mapped onto timm architectures.

EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn0`` …, the layout of many
published EfficientNet/-Lite checkpoints) registers its modules in the same order as timm's
EfficientNet (stem, blocks in order with expand → depthwise → SE → project, head, classifier), so
the mapping is positional — checked entry by entry: the parameter kind (weight, bias,
running_mean …) and the shape must agree, or nothing is mapped.
"""
from __future__ import annotations

from typing import Any

from edgefg.errors import ModelLoadError


def is_efficientnet_pytorch(state_dict: dict[str, Any]) -> bool:
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def map_efficientnet_pytorch(state_dict: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """EfficientNet-PyTorch ``state_dict`` → keys of the timm model whose state dict is ``target``.
    The classifier may differ in size (a new head): it is then left out for the caller to fit."""
    src, dst = list(state_dict.items()), list(target.items())
    if len(src) != len(dst):
        raise ModelLoadError(
            f"the EfficientNet-PyTorch checkpoint has {len(src)} entries, the timm model {len(dst)}",
            "pick the timm architecture of the same variant (e.g. tf_efficientnet_lite0 for efficientnet-lite0)",
        )
    out: dict[str, Any] = {}
    for (k_src, v_src), (k_dst, v_dst) in zip(src, dst):
        kind_src, kind_dst = k_src.rsplit(".", 1)[-1], k_dst.rsplit(".", 1)[-1]
        head = k_src.startswith("_fc.")
        if kind_src != kind_dst or (tuple(v_src.shape) != tuple(v_dst.shape) and not head):
            raise ModelLoadError(
                f"EfficientNet-PyTorch entry '{k_src}' {tuple(v_src.shape)} does not fit timm's '{k_dst}' {tuple(v_dst.shape)}",
                "pick the timm architecture of the same variant (e.g. tf_efficientnet_lite0 for efficientnet-lite0)",
            )
        if tuple(v_src.shape) == tuple(v_dst.shape):
            out[k_dst] = v_src
    return out
