"""benchmarks/ as a package: every script imports and answers --help (run both ways), the scripts share
benchmarks.common without sys.path hacks, private names or circles, and the block writer finds the
one file that holds a block's markers."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")
SCRIPTS = [m for m in MODULES if 'if __name__ == "__main__":' in (BENCH / f"{m}.py").read_text(encoding="utf-8")]
SHIM = "_checkout"


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_the_scripts_are_found():
    assert {"pareto", "results", "run", "compress_figures", "field_collect"} <= set(SCRIPTS)
    assert "common" in MODULES and SHIM in MODULES


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_answers_help(script):
    r = _run([f"benchmarks/{script}.py", "--help"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage:"), r.stdout[:500]


def test_scripts_answer_help_as_modules():
    """``python -m benchmarks.X`` too (a few: the import path is the same for all, checked below)."""
    for script in ("field_collect", "tune_agreement", "pareto"):
        r = _run(["-m", f"benchmarks.{script}", "--help"])
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (script, r.stderr[-2000:])


def test_scripts_run_from_anywhere():
    """``python benchmarks/X.py`` from another folder: the shim, not the working directory, finds the checkout."""
    r = subprocess.run([sys.executable, str(BENCH / "tune_early_stop.py"), "--help"], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stderr[-2000:]


def test_every_module_imports_as_part_of_the_package():
    """In one fresh interpreter, each module on its own first (an import circle would fail there) and
    without putting anything on sys.path."""
    code = ("import importlib, sys\n"
            f"for m in {[m for m in MODULES if m != SHIM]!r}:\n"
            "    for k in [k for k in sys.modules if k == 'benchmarks' or k.startswith('benchmarks.')]:\n"
            "        del sys.modules[k]\n"
            "    before = list(sys.path)\n"
            "    importlib.import_module('benchmarks.' + m)\n"
            "    assert sys.path == before, (m, 'changed sys.path')\n")
    r = _run(["-c", code], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) of every import in ``module``, function-level ones included."""
    tree = ast.parse((BENCH / f"{module}.py").read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [a.name for a in node.names]
            if node.module == "benchmarks":  # from benchmarks import pareto
                out += [(f"benchmarks.{n}", [], node.lineno) for n in names]
            else:
                out.append((node.module, names, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            out.append(("." * node.level + (node.module or ""), [a.name for a in node.names], node.lineno))
    return out


def test_scripts_import_each_other_only_as_benchmarks_modules_by_public_names_without_circles():
    graph: dict[str, set[str]] = {}
    for m in MODULES:
        graph[m] = set()
        for mod, names, line in _imports(m):
            where = f"benchmarks/{m}.py:{line}"
            assert not mod.startswith("."), f"{where}: relative import (breaks `python benchmarks/{m}.py`)"
            assert mod not in MODULES or mod == SHIM, f"{where}: `import {mod}` by its bare name: import benchmarks.{mod}"
            if mod == "readme_block":
                pytest.fail(f"{where}: readme_block is gone: benchmarks.common.write_block")
            if mod.startswith("benchmarks."):
                target = mod.split(".", 1)[1]
                assert target in MODULES, f"{where}: no module {mod}"
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{where}: private names {private} from {mod}: promote them to benchmarks.common"
                graph[m].add(target)
    assert graph["common"] == set(), "benchmarks.common imports no script"

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            assert nxt not in path, f"import circle: {' -> '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])

    for m in MODULES:
        visit(m, [m])


def test_only_the_shim_touches_sys_path():
    for m in MODULES:
        if m == SHIM:
            continue
        text = (BENCH / f"{m}.py").read_text(encoding="utf-8")
        assert "sys.path" not in text, f"benchmarks/{m}.py touches sys.path: the one shim is benchmarks/_checkout.py"
        assert 'os.environ.get("EDGEFG_DATA"' not in text or m == "common", f"benchmarks/{m}.py defines the data path: benchmarks.common.DATA"


# -- the block writer -------------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return tmp_path


BLOCK = "intro\n<!-- demo:start -->\nold table\n<!-- demo:end -->\noutro\n"


@pytest.mark.parametrize("where", ["README.md", "docs/results.md", "docs/deep/page.md"])
def test_block_written_into_the_one_file_that_holds_it(tmp_path, where, capsys):
    others = {f: "no markers here\n<!-- other:start -->\nx\n<!-- other:end -->\n" for f in ("README.md", "docs/index.md") if f != where}
    root = _tree(tmp_path, {**others, where: BLOCK})
    assert common.find_block("demo", root) == root / where
    assert common.write_block("demo", "| a |\n|---|\n", root=root) == root / where
    assert (root / where).read_text() == "intro\n<!-- demo:start -->\n| a |\n|---|\n<!-- demo:end -->\noutro\n"
    assert f"block 'demo' of {where}: written" in capsys.readouterr().out
    for f, text in others.items():
        assert (root / f).read_text() == text
    mtime = (root / where).stat().st_mtime_ns
    assert common.write_block("demo", "| a |\n|---|\n", root=root) == root / where  # the same text again: the file is left alone
    assert (root / where).stat().st_mtime_ns == mtime and "unchanged" in capsys.readouterr().out


def test_no_file_holds_the_block(tmp_path, capsys):
    root = _tree(tmp_path, {"README.md": "text\n", "docs/a.md": "<!-- demo:start -->\nonly the start\n", "notes/b.md": BLOCK})
    with pytest.raises(common.BlockError, match=r"no file holds the marker pair <!-- demo:start --> … <!-- demo:end -->.*docs/a.md has one marker"):
        common.find_block("demo", root)
    assert common.write_block("demo", "new\n", root=root) is None
    err = capsys.readouterr().err
    assert "block 'demo' not written: no file holds" in err and "never create markers" in err
    assert (root / "docs/a.md").read_text() == "<!-- demo:start -->\nonly the start\n"  # nothing created, nothing changed
    assert "<!-- demo" not in (root / "README.md").read_text()


def test_two_files_hold_the_block(tmp_path, capsys):
    root = _tree(tmp_path, {"README.md": BLOCK, "docs/results.md": BLOCK})
    with pytest.raises(common.BlockError, match=r"more than one place: README.md, docs/results.md"):
        common.find_block("demo", root)
    assert common.write_block("demo", "new\n", root=root) is None
    assert "more than one place" in capsys.readouterr().err
    assert (root / "README.md").read_text() == BLOCK and (root / "docs/results.md").read_text() == BLOCK


def test_twice_in_one_file_and_names_that_share_a_prefix(tmp_path):
    root = _tree(tmp_path, {"docs/a.md": BLOCK + BLOCK})
    with pytest.raises(common.BlockError, match=r"docs/a.md \(2 times\)"):
        common.find_block("demo", root)
    root = _tree(tmp_path, {"docs/a.md": BLOCK.replace("demo", "demo-long")})
    with pytest.raises(common.BlockError):
        common.find_block("demo", root)  # <!-- demo-long:start --> is not demo's marker
    assert common.find_block("demo-long", root) == root / "docs/a.md"


def test_an_explicit_file_must_hold_the_pair_once(tmp_path, capsys):
    root = _tree(tmp_path, {"README.md": BLOCK, "docs/a.md": BLOCK, "other.md": "nothing\n"})
    assert common.write_block("demo", "new\n", path=root / "docs/a.md", root=root) == root / "docs/a.md"  # the caller chose
    assert "new\n<!-- demo:end -->" in (root / "docs/a.md").read_text() and (root / "README.md").read_text() == BLOCK
    assert common.write_block("demo", "new\n", path=root / "other.md", root=root) is None
    assert common.write_block("demo", "new\n", path=root / "missing.md", root=root) is None
    err = capsys.readouterr().err
    assert "other.md holds the marker pair <!-- demo:start --> … <!-- demo:end --> 0 times, not once" in err and "cannot read" in err


def test_write_json(tmp_path):
    path = common.write_json(tmp_path / "sub" / "r.json", {"b": 1, "p": Path("/x")}, indent=1)
    assert path.read_text() == '{\n "b": 1,\n "p": "/x"\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left
