"""`edgefg doctor`: on this machine (no Jetson, no TensorRT) it runs and lists what is missing with
exit code 1; on a fake Orin Nano (device tree + strict TensorRT 10.3/pycuda fakes) it builds and
times the bundled tiny ONNX and exits 0."""
from __future__ import annotations

import importlib
import json
import types

from click.testing import CliRunner

from edgefg.tensorrt.doctor import TINY_ONNX, format_report, run_doctor
from tests.tensorrt.fakes import fake_pycuda, fake_tensorrt, install
from tests.tensorrt.test_device import jetson_tree


def test_doctor_here_says_what_is_missing(tmp_path):
    from edgefg.cli import cli

    out = tmp_path / "report.json"
    r = CliRunner().invoke(cli, ["doctor", "--target", "jetson-orin-nano", "--json", str(out)])
    report = json.loads(out.read_text())
    failed = {c["name"] for c in report["checks"] if c["status"] == "FAIL"}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert r.exit_code == 1 and report["exit_code"] == 1, r.output
        assert {"TensorRT", "engine"} <= failed and "not built: needs tensorrt" in r.output
    for name in ("device", "L4T", "JetPack", "TensorRT", "CUDA", "GPU", "DLA", "pycuda", "engine"):
        assert f"  {name} " in r.output
    r = CliRunner().invoke(cli, ["doctor", "--target", "rpi5"])
    assert r.exit_code == 2 and "not a Jetson/TensorRT target" in r.output


def test_doctor_on_a_fake_orin_nano_builds_and_times_the_tiny_engine(tmp_path, monkeypatch):
    assert TINY_ONNX.is_file()
    paths = jetson_tree(tmp_path)
    trt, cuda = fake_tensorrt("10.3.0"), fake_pycuda(sm_count=8)
    install(monkeypatch, trt, cuda)
    cv2 = types.SimpleNamespace(__version__="4.8.0", getBuildInformation=lambda: "  Video I/O:\n    GStreamer:                   YES (1.20.3)\n")
    fakes = {"tensorrt": trt, "pycuda.driver": cuda, "cv2": cv2}

    def importer(name):
        if name in fakes:
            return fakes[name]
        if name.startswith("cuda"):
            raise ImportError(name)
        return importlib.import_module(name)

    rep = run_doctor("jetson-orin-nano", paths=paths, importer=importer, iterations=5)
    text = format_report(rep)
    status = {c.name: c.status for c in rep.checks}
    assert rep.exit_code == 0, text
    assert status["device"] == status["L4T"] == status["TensorRT"] == status["CUDA"] == status["GPU"] == status["engine"] == "ok"
    assert status["JetPack"] == "ok" and "6.2" in text and "p3767-0005" in text and "8 SMs" in text
    assert rep.engine_ms is not None and "median" in text and "GStreamer" in text
    assert trt.rec.find("parse_from_file") == [("parse_from_file", str(TINY_ONNX))]
    assert not trt.errors and not cuda.errors
    # the same device against the Orin NX profile: DLA count differs → a warning, not a failure
    rep = run_doctor("jetson-orin-nx", paths=paths, importer=importer, iterations=2)
    assert {c.name: c.status for c in rep.checks}["DLA"] == "warn" and rep.exit_code == 0
