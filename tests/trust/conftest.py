"""A tiny hand-made ONNX bundle (no torch: GlobalAveragePool → MatMul, 2 labels) and Ed25519 keys."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import EDGEFG

SIZE = 16


def edgefg(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([*EDGEFG, *map(str, args)], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert the documented shape of a refusal: exit ``code``, no traceback, an 'error:' line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def write_onnx(path: Path, classes: int = 2, external: str | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=external, size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def make_bundle(root: Path, labels=("a", "b")) -> Path:
    from edgefg.manifest import Manifest, Preprocess, TensorSpec

    write_onnx(root / "model.onnx", len(labels))
    m = Manifest(
        name=root.name, kind="bundle", model_file="model.onnx", format="onnx", backend="onnxruntime", precision="fp32",
        labels=list(labels), preprocess=Preprocess(input_size=(SIZE, SIZE), crop_pct=1.0, mean=(0.5,) * 3, std=(0.25,) * 3),
        inputs=[TensorSpec("x", ["batch", 3, SIZE, SIZE])], outputs=[TensorSpec("y", ["batch", len(labels)])],
        backend_options={"providers": ["CPUExecutionProvider"]}, target="onnxruntime-cpu",
    )
    m.record_files(root)
    m.save(root)
    return root


@pytest.fixture()
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle")


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(root / f"{i}.png"), (rng.random((24, 32, 3)) * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two key pairs: 'old' and 'new' (for rotation)."""
    pytest.importorskip("cryptography")
    from edgefg.trust.signing import generate_keypair

    root = tmp_path_factory.mktemp("keys")
    return {name: generate_keypair(root, name) for name in ("old", "new")}
