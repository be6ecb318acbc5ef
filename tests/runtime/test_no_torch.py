"""The device install needs no torch and no compression stack: run `edgefg run` and `edgefg bench` in a
subprocess (and bench's spawned workers) where importing them raises ImportError, as on a device
installed with `pip install edgefg[runtime-openvino]`."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

# what a device install lacks (the compress extra); importing any of them fails
BLOCKED = ["torch", "torchvision", "timm", "nncf", "onnxscript", "torch_pruning", "safetensors", "matplotlib", "onnx"]
# edgefg's own compression/conversion code may ship on the device but must not be loaded by run/bench;
# the click option table of `compress` (click only) is the one allowed module.
WATCHED = ("edgefg.compress", "edgefg.converters", "edgefg.models", "edgefg.calibration")
ALLOWED = {"edgefg.compress", "edgefg.compress.cli_options"}

SITECUSTOMIZE = textwrap.dedent(
    f"""
    import os, sys
    BLOCKED = {BLOCKED!r}

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                with open(os.environ["EDGEFG_BLOCK_LOG"], "a") as fh:
                    fh.write(name + "\\n")
                raise ImportError(f"{{name}} is blocked: not installed on the device")
            return None

    sys.meta_path.insert(0, _Block())

    import atexit

    @atexit.register
    def _loaded():
        watched = {WATCHED!r}
        with open(os.environ["EDGEFG_BLOCK_LOG"] + ".loaded", "a") as fh:
            fh.write("".join(m + "\\n" for m in sorted(sys.modules) if m.split(".")[0:2] and m.startswith(watched)))
    """
)


def test_run_and_bench_without_torch(tiny_bundles, image_folder, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "blocked.log"
    log.write_text("")
    env = {"PYTHONPATH": str(site), "EDGEFG_BLOCK_LOG": str(log), "PATH": "/usr/bin:/bin", "EDGEFG_QUIET": "1", "HOME": str(tmp_path)}
    bundle = tiny_bundles["fp32-intel-cpu"]
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker works
    log.write_text("")
    (tmp_path / "blocked.log.loaded").write_text("")
    edgefg = [sys.executable, "-c", "import sys; from edgefg.cli import main; sys.argv[0] = 'edgefg'; main()"]
    out = tmp_path / "r.jsonl"
    run = subprocess.run([*edgefg, "run", str(bundle), "--source", str(image_folder), "--max-frames", "4", "--output", str(out), "--smooth", "ema:0.5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == 4 and "FPS" in run.stderr
    bench = subprocess.run([*edgefg, "bench", str(bundle), "--rounds", "1", "--iters", "3", "--warmup", "1", "--json", str(tmp_path / "b.json")],
                           env=env, capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["samples"] == 3
    assert log.read_text() == "", f"the runtime tried to import: {sorted(set(log.read_text().split()))}"
    loaded = set((tmp_path / "blocked.log.loaded").read_text().split())
    assert loaded <= ALLOWED, f"run/bench loaded compression code: {sorted(loaded - ALLOWED)}"


def test_runtime_extras_exclude_torch():
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    core = " ".join(data["project"]["dependencies"]).lower()
    for name in ("runtime-openvino", "runtime-onnxruntime", "runtime-tflite", "runtime-tensorrt"):
        deps = " ".join(extras[name]).lower()
        assert not any(t in deps + core for t in ("torch", "timm", "nncf")), name
