"""Shared fixtures: generated fine-grained-ish images, a tiny timm model in hub format, and
compressed artifacts of it. Real-data tests are marked ``realdata`` (see ../shared/data/README.md)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEFG_DATA", REPO.parent / "shared" / "data"))
CLASSES = ["Acadian_Flycatcher", "Least_Flycatcher", "Willow_Flycatcher"]  # near-identical on purpose
TINY_SIZE = 64
# the edgefg CLI as a subprocess, from this checkout (no console script needed)
EDGEFG = [sys.executable, "-c", "import sys; from edgefg.cli import main; sys.argv[0] = 'edgefg'; main()"]

os.environ.setdefault("EDGEFG_QUIET", "1")
# the ONNX export cache (edgefg/converters/torch_to_onnx.py) lives in a folder of this run, never in ~/.cache
os.environ.setdefault("EDGEFG_CACHE", __import__("tempfile").mkdtemp(prefix="edgefg-test-cache-"))


def pytest_collection_modifyitems(config, items):
    if DATA.is_dir():
        return
    if os.environ.get("EDGEFG_REQUIRE_DATA") == "1":
        raise pytest.UsageError(f"EDGEFG_REQUIRE_DATA=1 but the real data folder '{DATA}' is missing")
    skip = pytest.mark.skip(reason=f"real data not found at {DATA} (set EDGEFG_DATA)")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_data() -> Path:
    return DATA


def make_image(rng: np.random.Generator, cls: int, size: int = 96) -> np.ndarray:
    """A BGR image whose class shows in a small detail: a coloured stripe angle over noise."""
    img = (rng.random((size, size, 3)) * 60 + 90).astype(np.uint8)
    angle = [0.0, 60.0, 120.0][cls % 3] + rng.normal(0, 5)
    c = size // 2
    dx, dy = np.cos(np.radians(angle)) * size, np.sin(np.radians(angle)) * size
    color = [(40, 40, 200), (40, 200, 40), (200, 40, 40)][cls % 3]
    cv2.line(img, (int(c - dx), int(c - dy)), (int(c + dx), int(c + dy)), color, 5)
    return img


def write_image_folder(root: Path, per_class: int = 6, seed: int = 0, classes=CLASSES) -> Path:
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:03d}.jpg"), make_image(rng, ci))
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """ImageFolder: 3 classes × 6 JPEGs (96×96)."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "data")


def randomize_norms(model) -> None:
    """timm zero-initialises some BN weights; give every norm layer non-trivial weights/stats."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.8 + 0.6)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)


def write_hub_folder(root: Path, arch: str = "test_efficientnet", classes=CLASSES, size: int = TINY_SIZE) -> Path:
    """A timm hub-format folder (config.json + model.safetensors) for a tiny random model. A ViT is
    built at ``size`` (its position embeddings fit the input; config.json's ``model_args`` say so, as
    a real fine-tuned ViT's do) rather than at timm's default and resampled at every call."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model_args = {"img_size": size} if "vit" in arch or "deit" in arch else {}
    model = timm.create_model(arch, num_classes=len(classes), **model_args)
    randomize_norms(model)
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "model.safetensors"))
    cfg = {
        "architecture": arch,
        "num_classes": len(classes),
        "label_names": list(classes),
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, size, size],
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "num_classes": len(classes),
        },
    }
    (root / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_hub_folder(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_model, image_folder) -> dict[str, Path]:
    """fp32 and int8 artifacts of the tiny model (compressed once per session)."""
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.models.loader import load_model

    root = tmp_path_factory.mktemp("artifacts")
    model = load_model(tiny_model)
    out = {}
    for recipe in ("fp32", "int8"):
        out[recipe] = compress(model, root / recipe, CompressOptions(recipe=recipe, data=image_folder, calib_size=12, latency_iters=3)).directory
    return out


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory, tiny_artifacts) -> dict[str, Path]:
    """Bundles of the tiny model: {fp32,int8} × {intel-cpu, onnxruntime-cpu}."""
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for precision, art in tiny_artifacts.items():
        for target in ("intel-cpu", "onnxruntime-cpu"):
            out[f"{precision}-{target}"] = deploy(art, target, root / f"{precision}-{target}").directory
    return out


@pytest.fixture(scope="session")
def tflite_bundles(tmp_path_factory, tiny_artifacts, image_folder) -> dict[str, Path]:
    """rpi5 (LiteRT, NHWC) bundles of the tiny model: fp32 from the fp32 artifact, int8 from the int8 one."""
    pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("tflite")
    return {p: deploy(tiny_artifacts[p], "rpi5", root / p, precision=p, data=image_folder).directory for p in ("fp32", "int8")}
