"""`edgefg run --source 0` on a machine without that camera: a person at a terminal gets an answer in seconds."""
import time

from click.testing import CliRunner

import edgefg.cli as cli_module
from edgefg.cli import cli


def test_missing_camera_on_a_terminal_gives_up_with_a_hint(tiny_bundles, monkeypatch):
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", "/dev/video97"])
    assert r.exit_code == 2, r.output
    assert time.monotonic() - t0 < 30
    assert "error: no camera at '/dev/video97'" in r.output and "--max-retries -1 keeps retrying" in r.output
    assert "Traceback" not in r.output


def test_retry_policy_from_the_command_line(tiny_bundles, monkeypatch):
    seen = []

    def fake_run(bundle, source, opts):
        seen.append(opts.max_retries)
        return {"frames": 0}

    monkeypatch.setattr("edgefg.runtime.serve.run_pipeline", fake_run)
    monkeypatch.setattr("edgefg.runtime.serve.format_summary", lambda s: "")
    bundle = str(tiny_bundles["fp32-onnxruntime-cpu"])
    for interactive, args, expected in [(True, ["--source", "0"], 3), (False, ["--source", "0"], None), (True, ["--source", "0", "--max-retries", "-1"], None),
                                        (True, ["--source", "0", "--max-retries", "5"], 5), (True, ["--source", "rtsp://cam/s"], None)]:
        monkeypatch.setattr(cli_module, "_interactive", lambda: interactive)
        r = CliRunner().invoke(cli, ["run", bundle, *args])
        assert r.exit_code == 0, r.output
        assert seen[-1] == expected, (interactive, args)
