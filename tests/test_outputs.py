"""Report files: parent folders created, written atomically, one-line errors (edgefg/outputs.py)."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefg import outputs
from edgefg.errors import InputPathError

REPO = Path(__file__).resolve().parents[1]


def test_write_creates_parents_and_replaces_atomically(tmp_path):
    target = tmp_path / "a" / "b" / "r.json"
    outputs.write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    outputs.write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "r.txt"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        outputs.write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_parent_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InputPathError, match="is a file"):
        outputs.write_text(tmp_path / "f" / "r.md", "x")
    with pytest.raises(InputPathError, match="is a folder"):
        outputs.write_text(tmp_path, "x")


def _edgefg(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEFG_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "edgefg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_ci_gate_line_runs_as_shipped_in_a_fresh_folder(tmp_path, tiny_bundles, tiny_artifacts, image_folder):
    """examples/ci_accuracy_gate/accuracy-gate.yml's validate step, word for word, where reports/ does not exist."""
    job = yaml.safe_load((REPO / "examples/ci_accuracy_gate/accuracy-gate.yml").read_text())
    step = next(s for s in job["jobs"]["gate"]["steps"] if s.get("name") == "edgefg validate")
    argv = shlex.split(step["run"])
    assert argv[:2] == ["edgefg", "validate"]
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "models" / "bundle-int8").symlink_to(tiny_bundles["int8-onnxruntime-cpu"])
    (tmp_path / "models" / "art-fp32").symlink_to(tiny_artifacts["fp32"])
    (tmp_path / "data" / "test").symlink_to(image_folder)
    assert not (tmp_path / "reports").exists()
    r = _edgefg(argv[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads((tmp_path / "reports/accuracy.json").read_text())
    assert result["passed"] is True
    assert "<testsuites" in (tmp_path / "reports/accuracy.xml").read_text()
    assert (tmp_path / "reports/accuracy.md").read_text().startswith("# edgefg validate — PASSED")


def test_bench_json_into_a_new_folder(tmp_path, tiny_bundles):
    r = _edgefg([ "bench", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--rounds", "1", "--iters", "2", "--warmup", "1",
                 "--json", "nodir/deeper/b.json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(json.loads((tmp_path / "nodir/deeper/b.json").read_text())["results"]) == 1


def test_report_path_under_a_file_is_one_line_exit_2(tmp_path, tiny_bundles, image_folder):
    (tmp_path / "file").write_text("")
    r = _edgefg(["validate", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--data", str(image_folder), "--json", "file/r.json"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: cannot write 'file/r.json'"), r.stderr


# -- one atomic writer ---------------------------------------------------------------------------
# Renames that are not "write one file atomically" (those go through edgefg.outputs.write_bytes): each
# with why it is a rename of its own.
OWN_RENAMES = {
    ("edgefg/outputs.py", "write_bytes"): "the one atomic file writer",
    ("edgefg/manifest.py", "atomic_output_dir"): "swaps a whole output folder (old one kept until the new is in place)",
    ("edgefg/distributed/shipping.py", "_publish"): "publishes a whole shipped folder",
    ("edgefg/compress/train.py", "_save_checkpoint"): "commits three checkpoint files, state.json last",
    ("edgefg/runtime/install.py", "_switch"): "atomic symlink switch of `current`",
    ("edgefg/runtime/install.py", "_install_locked"): "moves a whole verified release folder into place",
    ("edgefg/runtime/outputs/sinks.py", "_rotate"): "log rotation (name.1, name.2, …)",
    ("edgefg/runtime/outputs/spool.py", "_set_aside"): "sets a damaged spool (and its -wal/-shm) aside",
}


def _renames(path: Path):
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            f = node.func
            os_call = isinstance(f.value, ast.Name) and f.value.id == "os" and f.attr in ("replace", "rename")
            path_call = (f.attr in ("rename", "replace") and len(node.args) == 1 and not node.keywords  # Path.rename/replace(target); str.replace takes 2
                         and not (isinstance(f.value, ast.Name) and f.value.id == "dataclasses"))
            if os_call or (path_call and not isinstance(node.args[0], ast.Constant)):
                yield fn.name, node.lineno


def test_every_file_write_goes_through_the_one_atomic_writer():
    """A temp file + rename by hand (seven ways, different modes and fsync) is what #27 removed: a file
    is written atomically by edgefg.outputs.write_bytes/write_text/write_json, and any other rename is
    listed above with its reason."""
    found = {}
    for root in ("edgefg", "benchmarks"):
        for p in sorted((REPO / root).rglob("*.py")):
            rel = p.relative_to(REPO).as_posix()
            for fn, line in _renames(p):
                found.setdefault((rel, fn), []).append(line)
    unlisted = {k: v for k, v in found.items() if k not in OWN_RENAMES}
    assert not unlisted, f"write these through edgefg.outputs.write_bytes (or list them in OWN_RENAMES with a reason): {unlisted}"
    stale = set(OWN_RENAMES) - set(found)
    assert not stale, f"OWN_RENAMES lists renames that are gone: {stale}"


def test_the_atomic_writer_gives_umask_modes_and_can_fsync(tmp_path):
    old = os.umask(0o027)
    try:
        p = outputs.write_bytes(tmp_path / "x.bin", b"abc", fsync=True)
    finally:
        os.umask(old)
    assert p.read_bytes() == b"abc"
    assert (p.stat().st_mode & 0o777) == 0o640
