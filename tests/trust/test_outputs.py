"""Leftovers and options: stale .tmp-* folders of killed runs are removed by the next run of the same
command; outputs get the user's ordinary modes (not mkdtemp's 0700); numeric options are range-checked."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from edgefg.manifest import atomic_output_dir
from edgefg.runtime.install import install_bundle
from edgefg.trust.outputs import sweep_stale
from tests.trust.conftest import edgefg, make_bundle, one_line_error


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _modes(root):
    return {p.relative_to(root).as_posix() or ".": stat.S_IMODE(os.stat(p).st_mode) for p in [root, *root.rglob("*")]}


@pytest.fixture()
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_output_sweeps_stale_temps_of_the_same_output_only(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".out.tmp-{dead}-abc"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"x" * 1000)
    live = tmp_path / f".out.tmp-{os.getpid()}-xyz"  # a run in progress (this process) is left alone
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead}-abc"  # another command's output: not ours to touch
    other.mkdir()
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("1")
    assert not stale.exists() and live.exists() and other.exists()


def test_killed_deploy_leaves_a_temp_that_the_next_deploy_removes(tmp_path):
    """A real interrupted run: a process killed inside atomic_output_dir."""
    code = ("import os, signal; from edgefg.manifest import atomic_output_dir\n"
            f"with atomic_output_dir({str(tmp_path / 'bundle')!r}) as t:\n"
            "    (t / 'big.bin').write_bytes(b'0' * 100000); os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code])
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.tmp-")]
    assert len(left) == 1
    with atomic_output_dir(tmp_path / "bundle") as tmp:
        (tmp / "ok").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_install_sweeps_stale_release_temps(tmp_path):
    b = make_bundle(tmp_path / "b")
    releases = tmp_path / "dev" / "releases"
    releases.mkdir(parents=True)
    stale = releases / f".b-123.tmp-{_dead_pid()}-q"
    stale.mkdir()
    (tmp_path / "dev" / f".current.tmp-{_dead_pid()}-link").symlink_to("nowhere")
    install_bundle(b, tmp_path / "dev")
    assert not stale.exists()
    assert not any(p.name.startswith(".current.tmp-") for p in (tmp_path / "dev").iterdir())


def test_outputs_get_ordinary_modes(tmp_path, umask022):
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("1")
        (tmp / "g").write_text("2")
        os.chmod(tmp / "g", 0o600)  # e.g. copied from a private file
    assert _modes(tmp_path / "out") == {".": 0o755, "sub": 0o755, "sub/f": 0o644, "g": 0o644}
    r = install_bundle(make_bundle(tmp_path / "b"), tmp_path / "dev")
    modes = _modes(r.release)
    assert modes["."] == 0o755 and all(m == 0o644 for k, m in modes.items() if k != ".")


def test_outputs_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("1")
    finally:
        os.umask(old)
    assert _modes(tmp_path / "out") == {".": 0o750, "f": 0o640}


def test_sweep_ignores_unrelated_names(tmp_path):
    (tmp_path / "tmp-1").mkdir()
    (tmp_path / ".x.tmp-notapid").mkdir()
    assert sweep_stale(tmp_path) == []


@pytest.mark.parametrize("args,needle", [
    (["--topk", "-3"], "--topk"), (["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"),
    (["--batch", "0"], "--batch"), (["--max-frames", "0"], "--max-frames"), (["--min-confidence", "2"], "--min-confidence"),
    (["--stall-timeout", "0"], "--stall-timeout"), (["--max-retries", "-2"], "--max-retries"), (["--rotate-mb", "-5"], "--rotate-mb"),
    (["--max-pixels", "-1"], "--max-pixels"), (["--stats-every", "0"], "--stats-every"),
])
def test_run_numeric_options_are_range_checked(tmp_path, args, needle):
    proc = edgefg("run", tmp_path, "--source", "0", *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["-1", "0", "abc", "99999", "1.5"])
def test_num_threads_env_is_range_checked(tmp_path, value):
    line = one_line_error(edgefg("targets", env={"EDGEFG_NUM_THREADS": value}))
    assert "EDGEFG_NUM_THREADS" in line


def test_other_commands_check_ranges(tmp_path):
    for cmd in (["bench", tmp_path, "--iters", "0"], ["bench", tmp_path, "--threads", "-2"], ["install", tmp_path, "--into", tmp_path, "--keep", "0"],
                ["validate", tmp_path, "--data", tmp_path, "--min-top1", "1.5"], ["validate", tmp_path, "--data", tmp_path, "--max-images", "-1"]):
        proc = edgefg(*cmd)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Invalid value" in proc.stderr, (cmd, proc.stderr)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_single_file_writers_follow_the_umask(tmp_path, mask, mode):
    """JSON reports and tune's trial files (mkstemp makes 0600) get the mode any new file gets."""
    from edgefg.outputs import write_json
    from edgefg.tune.store import atomic_write_json

    old = os.umask(mask)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        atomic_write_json(tmp_path / "t" / "trial.json", {"b": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "t" / "trial.json").st_mode) == mode
    assert json.loads((tmp_path / "t" / "trial.json").read_text()) == {"b": 2}
