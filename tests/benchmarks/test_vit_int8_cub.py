"""The ViT accuracy-aware INT8 figure's own logic (benchmarks/vit_int8_cub.py): which variants run,
which float layers the control reverted, the goal check and the README block. The figure itself runs
on real data (``python benchmarks/compress_figures.py vit-int8``); these rows are hand-made."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import vit_int8_cub as fig  # noqa: E402


def _row(name: str, drop: float, speedup: float, reverted: list[str]) -> dict:
    scores = {"top1": 0.88 - drop / 100, "top1_drop_pts": drop, "speedup": speedup, "speedup_vs_plain_vit_fp32": speedup * 1.3,
              "worst_class_drop_images": "3/29", "worst_class_p": 0.125, "worst_class_p_adjusted": 1.0, "classes_compared": 100}
    row = {"variant": name, "fp32": {"top1": 0.88}, "int8_plain": {**scores, "top1_drop_pts": 1.8},
           "int8_acc": {**scores, "reverted_modules": reverted, "float_in_plain_int8": ["node_mm"], "float_layer_modules": {"node_mm": "blocks.0.attn"},
                        "cli_plain_int8_top1_drop": 1.8},
           "latency": "OpenVINO, interleaved", "seconds": {"variant_total": 360.0}}
    row["meets_target"] = fig.meets(row)
    return row


def test_slug_and_variant_choice():
    assert fig.slug("EViT keep 0.5, 1 epoch KD") == "evit-keep-0-5-1-epoch-kd"
    available = {"plain ViT": "0.onnx", "EViT keep 0.5": "2.onnx"}
    assert fig.pick_variants(available, None) == (["plain ViT", "EViT keep 0.5"], [v for v in fig.DEFAULT_VARIANTS if v not in available])
    assert fig.pick_variants(available, ["EViT keep 0.5", "nope"]) == (["EViT keep 0.5"], ["nope"])


def test_float_layers_split_into_preset_and_reverted():
    q = {"float_layers_nncf": ["node_mm", "node_Conv_7"], "float_layers_per_class": ["node_Gemm_9"],
         "float_layer_modules": {"node_mm": "blocks.0.attn", "node_Conv_7": "patch_embed.backbone.conv_stem"}}
    s = fig.float_summary(q, plain_float=["node_mm"])
    assert s["float_in_plain_int8"] == ["node_mm"]
    assert s["reverted"] == ["node_Conv_7", "node_Gemm_9"]
    assert s["reverted_modules"] == ["patch_embed.backbone.conv_stem", "?"]  # a node without exporter metadata stays unnamed


@pytest.mark.parametrize("drop, speedup, ok", [(0.5, 1.5, True), (0.51, 2.0, False), (0.0, 1.49, False), (-0.3, 1.7, True)])
def test_goal_needs_both_accuracy_and_speed(drop, speedup, ok):
    assert _row("v", drop, speedup, [])["meets_target"] is ok


def test_readme_block_names_reverted_modules_and_unfinished_variants():
    v = {"max_drop": 0.5, "max_class_drop": 10.0, "smooth_quant": None, "calibration": {"images": 300},
         "validation": {"images": 2903, "subset": None}, "seconds_total": 1800, "not_exported": [],
         "planned": ["plain ViT", "EViT keep 0.5", "ToMe keep 0.5"],
         "rows": [_row("plain ViT", 0.2, 1.6, ["patch_embed.backbone.blocks.0.0.conv_dw"]), _row("EViT keep 0.5", 0.7, 2.1, [])]}
    text = fig.render(v)
    assert "all 2,903 cub100/test images" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| plain ViT") or ln.startswith("| EViT")]
    assert "`patch_embed.backbone.blocks.0.0.conv_dw`" in lines[0] and lines[0].split("|")[-3].strip() == "yes"
    cells = [c.strip() for c in lines[1].split("|")]
    assert cells[3] == "-1.80 pt, 2.10×; 3/29, p=0.12 (1)" and cells[4] == "87.30 %, -0.70 pt, 2.10× (2.73×)" and cells[-3] == "no"
    assert "Not run yet" in text and "ToMe keep 0.5" in text.split("Not run yet")[1]
    assert "blocks.0.attn" in text
