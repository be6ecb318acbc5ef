"""Sweep inputs shared by the tune tests: the tiny CNN, train/val folders, a 4-point space, and the
in-process reference sweep (run once per session, with Ray made unimportable)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, write_image_folder

SPACE = """
[space]
precision = ["fp32", "int8"]
resolution = ["none", 48]
calib_size = [12]
"""
# runs `edgefg ARGS...` with ray (and anything under it) impossible to import
NO_RAY = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ray":
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
    from edgefg.cli import main
    sys.argv = ["edgefg"] + sys.argv[1:]
    main()
    """
)


def edgefg_without_ray(*args, cwd: Path, **kw) -> subprocess.Popen:
    env_path = {"PYTHONPATH": str(REPO)}
    import os

    return subprocess.Popen([sys.executable, "-c", NO_RAY, *map(str, args)], cwd=cwd, env={**os.environ, **env_path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="session")
def sweep_inputs(tmp_path_factory, tiny_model, image_folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    space = root / "space.toml"
    space.write_text(SPACE)
    # unlabelled "camera frames" in nested folders, one of them a hard link of a training image
    frames = write_image_folder(root / "frames" / "cam0", per_class=4, seed=3)
    import os

    first = sorted(image_folder.rglob("*.jpg"))[0]
    os.link(first, frames / "seen-in-training.jpg")
    return {"model": tiny_model, "train": image_folder, "val": write_image_folder(root / "val", per_class=5, seed=1), "space": space, "root": root,
            "frames": root / "frames"}


def tune_args(inputs: dict[str, Path], out: Path, *extra) -> list[str]:
    return ["tune", inputs["model"], "--data", inputs["train"], "--val-data", inputs["val"], "--target", "intel-cpu", "--target", "onnxruntime-cpu",
            "--space", inputs["space"], "--bench-iters", 3, "-o", out, *extra]


@pytest.fixture(scope="session")
def inprocess_sweep(sweep_inputs) -> dict:
    """The 4-trial sweep through the CLI in a process where `import ray` fails."""
    out = sweep_inputs["root"] / "inprocess"
    p = edgefg_without_ray(*tune_args(sweep_inputs, out, "--agreement-data", sweep_inputs["frames"]), cwd=sweep_inputs["root"])
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    return {"dir": out, "result": json.loads((out / "tune.json").read_text()), "stdout": stdout}
