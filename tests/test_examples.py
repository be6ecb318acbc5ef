"""The examples run, in reduced form (tiny model, generated images)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cub_birds_openvino_script(tiny_model, image_folder, tmp_path):
    env = {**os.environ, "MODEL": str(tiny_model), "TRAIN": str(image_folder), "TEST": str(image_folder),
           "OUT": str(tmp_path / "out"), "CALIB": "12", "EDGEFG": f"{sys.executable} -m edgefg", "EDGEFG_QUIET": "1"}
    r = subprocess.run(["bash", str(REPO / "examples/cub_birds_openvino/run.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / "out"
    assert json.loads((out / "validate.json").read_text())["passed"] is True
    assert len(json.loads((out / "bench.json").read_text())["results"]) == 2
    assert len((out / "run.jsonl").read_text().splitlines()) == 6  # the first class folder holds 6 images


def _gate(bundle, data, reference, max_drop):
    env = {**os.environ, "EDGEFG_BUNDLE": str(bundle), "EDGEFG_GATE_DATA": str(data), "EDGEFG_REFERENCE": str(reference),
           "EDGEFG_MAX_TOP1_DROP": str(max_drop), "EDGEFG_MAX_CLASS_DROP": "100"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "examples/ci_accuracy_gate/test_accuracy_gate.py")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_ci_accuracy_gate_passes_and_fails(tiny_bundles, tiny_artifacts, image_folder):
    ok = _gate(tiny_bundles["int8-onnxruntime-cpu"], image_folder, tiny_artifacts["fp32"], 100)
    assert ok.returncode == 0 and "2 passed" in ok.stdout, ok.stdout
    bad = _gate(tiny_bundles["int8-onnxruntime-cpu"], image_folder, tiny_artifacts["fp32"], -100)  # would need a 100-point gain
    assert bad.returncode == 1 and "1 failed, 1 passed" in bad.stdout, bad.stdout


def test_jetson_workstation_script(tiny_model, image_folder, tmp_path):
    env = {**os.environ, "MODEL": str(tiny_model), "TRAIN": str(image_folder), "TEST": str(image_folder),
           "OUT": str(tmp_path / "out"), "CALIB": "12", "EDGEFG": f"{sys.executable} -m edgefg", "EDGEFG_QUIET": "1"}
    r = subprocess.run(["bash", str(REPO / "examples/jetson_deploy/workstation.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "trtexec" in r.stdout and (tmp_path / "out" / "bundle-jetson-orin-nano-int8.tgz").stat().st_size > 0
