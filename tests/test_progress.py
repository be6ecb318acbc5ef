"""Progress and logs go to stderr, results to stdout; long steps report, short ones stay quiet."""
import os
import subprocess
import sys
import time
from pathlib import Path

from edgefg import progress

REPO = Path(__file__).resolve().parents[1]


def test_long_step_reports_count_and_eta_on_stderr(monkeypatch, capsys):
    monkeypatch.delenv("EDGEFG_QUIET", raising=False)
    monkeypatch.setenv("EDGEFG_PROGRESS_EVERY", "0.05")
    for _ in progress.track(range(4), "pruning", 4):
        time.sleep(0.06)
    out, err = capsys.readouterr()
    assert out == ""
    assert "pruning: " in err and "/4 (" in err and "ETA" in err and "pruning: done in" in err


def test_opaque_call_reports_elapsed_and_note(monkeypatch, capsys):
    monkeypatch.delenv("EDGEFG_QUIET", raising=False)
    monkeypatch.setenv("EDGEFG_PROGRESS_EVERY", "0.05")
    with progress.activity("NNCF accuracy control") as note:
        note("validation run 1")
        time.sleep(0.2)
    out, err = capsys.readouterr()
    assert out == "" and "NNCF accuracy control: running" in err and "validation run 1" in err


def test_short_step_prints_nothing(monkeypatch, capsys):
    monkeypatch.delenv("EDGEFG_QUIET", raising=False)
    monkeypatch.setenv("EDGEFG_PROGRESS_EVERY", "30")
    assert list(progress.track([1, 2], "x")) == [1, 2]
    with progress.stdout_to_stderr():
        print("third-party chatter")
    out, err = capsys.readouterr()
    assert out == "" and err == "third-party chatter\n"


def test_compress_stdout_is_the_report_and_warnings_go_to_stderr(tiny_model, image_folder, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EDGEFG_QUIET"}
    env.update(PYTHONPATH=str(REPO), EDGEFG_PROGRESS_EVERY="0.01")
    r = subprocess.run([sys.executable, "-m", "edgefg", "compress", str(tiny_model), "--data", str(image_folder), "--recipe", "fp32",
                        "--calib-size", "6", "--latency-iters", "2", "-o", str(tmp_path / "art")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("# edgefg compress report"), r.stdout[:300]
    for noise in ("WARNING", "INFO", "calibration images:", "Warning", "W1", "oneDNN"):
        assert noise not in r.stdout, noise
    assert "no --val-data" in r.stderr and "scoring fp32 reference" in r.stderr
    header = (tmp_path / "art" / "report.md").read_text().split("Model:")[0]
    assert "measured on training images" in header  # where a reader looks, not only in a scrolled-by warning


def test_native_logs_are_muted_but_python_stderr_is_not(monkeypatch, capfd):
    monkeypatch.delenv("EDGEFG_NATIVE_LOGS", raising=False)
    with progress.native_logs_silenced():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")  # what TensorFlow's C++ does
        print("edgefg: still here", file=sys.stderr)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "edgefg: still here" in err and "after" in err
    monkeypatch.setenv("EDGEFG_NATIVE_LOGS", "1")  # -vv
    with progress.native_logs_silenced():
        os.write(2, b"native line\n")
    assert "native line" in capfd.readouterr().err
