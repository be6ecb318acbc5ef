"""The device install needs no torch and no compression stack: run `edgefg run`, `bench` (and its
spawned workers) and `validate` in a subprocess where importing them raises ImportError, as on a device
installed with `pip install edgefg[runtime-openvino]`; `compress` there says what to install."""
import json
import os
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


REPO = Path(__file__).resolve().parents[2]


def _device(tmp_path):
    """Run ``edgefg ARGS`` as on a device: the compression stack cannot be imported. Returns a function
    giving (completed process, modules it tried to import, edgefg compression modules it loaded)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "blocked.log"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "EDGEFG_BLOCK_LOG": str(log), "PATH": "/usr/bin:/bin", "EDGEFG_QUIET": "1", "HOME": str(tmp_path)}
    edgefg = [sys.executable, "-c", "import sys; from edgefg.cli import main; sys.argv[0] = 'edgefg'; main()"]

    def run(*args):
        log.write_text("")
        (tmp_path / "blocked.log.loaded").write_text("")
        proc = subprocess.run([*edgefg, *map(str, args)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        return proc, set(log.read_text().split()), set((tmp_path / "blocked.log.loaded").read_text().split())

    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker works
    return run


def device_edgefg(*args, cwd) -> subprocess.CompletedProcess:
    """``edgefg ARGS`` as on a device without the compression stack (for other modules' tests)."""
    return _device(Path(cwd))(*args)[0]


def test_run_and_bench_without_torch(tiny_bundles, image_folder, tmp_path):
    edgefg = _device(tmp_path)
    bundle = tiny_bundles["fp32-intel-cpu"]
    out = tmp_path / "r.jsonl"
    run, blocked, loaded = edgefg("run", bundle, "--source", image_folder, "--max-frames", 4, "--output", out, "--smooth", "ema:0.5")
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == 4 and "FPS" in run.stderr
    assert not blocked, f"run tried to import: {sorted(blocked)}"
    assert loaded <= ALLOWED, f"run loaded compression code: {sorted(loaded - ALLOWED)}"
    bench, blocked, loaded = edgefg("bench", bundle, "--rounds", 1, "--iters", 3, "--warmup", 1, "--json", tmp_path / "b.json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["samples"] == 3
    assert not blocked, f"bench tried to import: {sorted(blocked)}"
    assert loaded <= ALLOWED, f"bench loaded compression code: {sorted(loaded - ALLOWED)}"


def test_validate_int8_bundle_without_torch(tiny_bundles, tiny_artifacts, image_folder, tmp_path):
    """validate against the FP32 artifact reads images with the ImageFolder reader, nothing of the compression stack."""
    edgefg = _device(tmp_path)
    r, blocked, _ = edgefg("validate", tiny_bundles["int8-intel-cpu"], "--data", image_folder, "--reference", tiny_artifacts["fp32"], "--json", tmp_path / "v.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "v.json").read_text())["agreement"] > 0 and not blocked, sorted(blocked)


def test_compress_on_a_device_says_what_to_install(tiny_model, image_folder, tmp_path):
    r, _, _ = _device(tmp_path)("compress", tiny_model, "--data", image_folder, "-o", tmp_path / "x")
    assert r.returncode == 2 and "pip install 'edgefg[compress]'" in r.stderr and "Traceback" not in r.stderr


def test_runtime_extras_exclude_torch():
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    core = " ".join(data["project"]["dependencies"]).lower()
    for name in ("runtime-openvino", "runtime-onnxruntime", "runtime-tflite", "runtime-tensorrt"):
        deps = " ".join(extras[name]).lower()
        assert not any(t in deps + core for t in ("torch", "timm", "nncf")), name
