"""The systemd example keeps the camera password off the command line: its ExecStart, expanded the way
systemd expands it (EnvironmentFile variables, %d = the credentials directory), is run for real."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from edgefg.trust.bundle_signing import sign_bundle
from tests.trust.conftest import make_bundle

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "field_camera_service"


def _unit_exec_start() -> str:
    text = (EXAMPLE / "edgefg-camera.service").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    return next(ln.split("=", 1)[1] for ln in joined.splitlines() if ln.startswith("ExecStart="))


def _env_file() -> dict[str, str]:
    env = {}
    for ln in (EXAMPLE / "edgefg-camera.env").read_text().splitlines():
        if ln.strip() and not ln.lstrip().startswith("#"):
            k, v = ln.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def _expand(cmd: str, env: dict[str, str], creds: Path) -> list[str]:
    cmd = cmd.replace("%d", str(creds))
    cmd = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], cmd)  # ${VAR}: one word
    words = []
    for w in shlex.split(cmd):
        m = re.fullmatch(r"\$(\w+)", w)
        words += env[m[1]].split() if m else [w]  # $VAR: split on whitespace, as systemd does
    return words


def test_unit_has_no_secret_and_reads_the_source_from_a_credential():
    unit = (EXAMPLE / "edgefg-camera.service").read_text()
    assert "LoadCredential=camera-url:" in unit and "--source-file %d/camera-url" in _unit_exec_start()
    assert "--trust" in _unit_exec_start()
    env_text = (EXAMPLE / "edgefg-camera.env").read_text()
    assert not re.search(r"^[^#]*://[^/\s]*@", env_text, re.M)  # no userinfo outside comments
    assert "EDGEFG_SOURCE=" not in env_text


def test_expanded_exec_start_runs_and_never_shows_the_password(tmp_path, keys, photos):
    key, pub = keys["old"]
    bundle = make_bundle(tmp_path / "bundle")
    sign_bundle(bundle, key)
    creds = tmp_path / "credentials"
    creds.mkdir()
    env = {**_env_file(), "EDGEFG_BUNDLE": str(bundle), "EDGEFG_TRUST": str(pub), "EDGEFG_HTTP": "127.0.0.1:0",
           "EDGEFG_OUTPUT": str(tmp_path / "results.jsonl"), "EDGEFG_EXTRA_ARGS": "--max-retries 0 --threads 1"}
    password = "Vi3wer@Cam:pass"
    (creds / "camera-url").write_text(f"rtsp://viewer:{password}@127.0.0.1:9/stream1\n")  # port 9: nothing listens
    argv = _expand(_unit_exec_start(), env, creds)
    assert argv[0].endswith("/edgefg") and argv[1] == "run"
    assert not any(password in a or "viewer" in a for a in argv)  # what ps and /proc/PID/cmdline show
    edgefg = [sys.executable, "-c", "import sys; from edgefg.cli import main; sys.argv[0] = 'edgefg'; main()"]
    proc = subprocess.run([*edgefg, *argv[1:]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr  # camera down, retries exhausted
    assert "Vi3wer" not in proc.stderr + proc.stdout and "viewer:***@127.0.0.1" in proc.stderr
    # the same unit on a local source: it runs, signed bundle accepted
    (creds / "camera-url").write_text(f"{photos}\n")
    env["EDGEFG_EXTRA_ARGS"] = "--max-frames 2 --threads 1"
    ok = subprocess.run([*edgefg, *_expand(_unit_exec_start(), env, creds)[1:]], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
