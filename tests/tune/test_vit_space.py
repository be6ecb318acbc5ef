"""The ViT space end to end (#23): precision × token reduction on a tiny ViT, deployed to intel-cpu
(OpenVINO) and rpi5 (LiteRT). Every point deploys and is measured on both targets; token-reduced
trials reach the ARM target as LiteRT bundles rebuilt from the artifact's own wrapper files."""
import json

import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from tests.conftest import write_hub_folder

pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")

SPACE = '[space]\nprecision = ["fp32", "int8"]\ntoken_keep = ["none", 0.5]\ntoken_method = ["evit"]\ncalib_size = [12]\n'


def test_vit_space_deploys_every_point_to_openvino_and_litert(sweep_inputs, tmp_path):
    model = write_hub_folder(tmp_path / "vit", arch="test_vit")
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    out = tmp_path / "tune"
    args = ["tune", model, "--data", sweep_inputs["train"], "--val-data", sweep_inputs["val"], "--target", "intel-cpu", "--target", "rpi5",
            "--space", space, "--bench-iters", 3, "--max-drop", 100, "-o", out]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "tune.json").read_text())
    by = {t["label"]: t for t in res["trials"]}
    assert set(by) == {"fp32", "int8", "fp32 evit0.5", "int8 evit0.5"}
    assert all(t["status"] == "ok" for t in res["trials"]), {t["label"]: t["error"] for t in res["trials"]}
    for label, t in by.items():
        precision = label.split()[0]
        for target, backend in (("intel-cpu", "openvino"), ("rpi5", "tflite")):
            row = t["targets"][target]
            assert row["error"] is None and row["precision"] == precision, (label, target, row)
            assert all(isinstance(row[k], float) for k in ("top1", "reference_top1", "top1_drop", "agreement", "latency_ms_p50")), (label, target, row)
            m = json.loads((out / "trials" / t["id"] / target / "manifest.json").read_text())
            assert (m["backend"], m["precision"]) == (backend, precision)
        rpi = json.loads((out / "trials" / t["id"] / "rpi5" / "manifest.json").read_text())
        methods = [c.get("method") for c in rpi["compression"]]
        assert ("token-reduction-evit" in methods) == ("evit" in label), methods
        assert rpi["format"] == "tflite" and rpi["model_file"].endswith(".tflite")
        if "evit" in label:  # rebuilt from the artifact's wrapper files, checked against its ONNX
            assert "the artifact's PyTorch weights" in " ".join(rpi["compression"][-1]["notes"])
        if precision == "int8":
            assert rpi["preprocess"]["dtype"] == "int8"
