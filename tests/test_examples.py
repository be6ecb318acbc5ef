"""The CI accuracy gate example, on the tiny model (the shell examples run on real data in tests/test_docs.py)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
