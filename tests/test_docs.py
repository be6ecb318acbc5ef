"""The README and the example scripts, run as written on a small slice of the real data.

Every fenced ``bash``/``python`` block of README.md runs in a fresh folder where the placeholders a
reader replaces exist as real paths (``MODEL``, ``DATA/train``, ``train/``, ``models/…``, ``cub/…``
link to a slice of ``EDGEFG_DATA``; ``BUNDLE`` to the bundle an earlier block wrote), with ``edgefg``
on the PATH. A comment right before a block may say::

    <!-- docs-test: skip (why) -->                     the block is not run; the reason shows as the skip
    <!-- docs-test: replace "A" "B" (why) -->          run with A replaced by B (a camera the machine lacks)

``toml`` blocks are loaded as compression recipes. The example scripts run with only the overrides
they document (EDGEFG_DATA, OUT, EDGEFG). After each run, every file or folder the text names as
an output (``-o``, ``--output``, ``--json``, ``--junit``, ``--markdown``) must exist.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"((?:<!-- docs-test:[^\n]*-->\n)*)```(\w+)\n(.*?)```", re.S)
MARKER = re.compile(r"<!-- docs-test: (skip|replace) (.*?) -->")
REPLACE = re.compile(r'"([^"]*)" "([^"]*)"')
OUTPUT_FLAGS = ("-o", "--output", "--json", "--junit", "--markdown")
SLICE_CLASSES, SLICE_TRAIN, SLICE_TEST = 3, 4, 3  # images per class: enough to calibrate, validate and run
MODEL_NAME = "mobilenetv2_cub100"

pytestmark = pytest.mark.realdata


def readme_blocks() -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(id, language, body, markers) of every fenced block of README.md, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        markers = MARKER.findall(m.group(1))
        line = text.count("\n", 0, m.start(2)) + 1
        out.append((f"README.md:{line}-{m.group(2)}", m.group(2), m.group(3), markers))
    return out


def _make_slice(root: Path) -> Path:
    """EDGEFG_DATA's layout with a few images per class: root/cub100/{train,test}, root/models/<model>."""
    classes = sorted(p.name for p in (DATA / "cub100" / "test").iterdir() if p.is_dir())[:SLICE_CLASSES]
    for split, n in (("train", SLICE_TRAIN), ("test", SLICE_TEST)):
        for c in classes:
            (root / "cub100" / split / c).mkdir(parents=True)
            for img in sorted((DATA / "cub100" / split / c).glob("*.jpg"))[:n]:
                (root / "cub100" / split / c / img.name).symlink_to(img)
    (root / "models").mkdir()
    (root / "models" / MODEL_NAME).symlink_to(DATA / "models" / MODEL_NAME)
    return root


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The data slice, an ``edgefg`` command on the PATH, and the bundles blocks have written so far."""
    root = tmp_path_factory.mktemp("docs")
    data = _make_slice(root / "data")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "edgefg").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgefg "$@"\n')
    (bin_dir / "edgefg").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "EDGEFG_QUIET"}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '')}", PYTHONPATH=str(REPO), EDGEFG_QUIET="1", EDGEFG_DATA=str(data))
    return {"root": root, "data": data, "env": env, "bundles": []}


def _workdir(sandbox, name: str) -> Path:
    """A fresh folder holding the placeholders a reader replaces, as real paths."""
    data = sandbox["data"]
    wd = sandbox["root"] / re.sub(r"\W+", "_", name)
    wd.mkdir()
    links = {"MODEL": data / "models" / MODEL_NAME, "train": data / "cub100" / "train", "test": data / "cub100" / "test",
             "models": data / "models", "cub": data / "cub100"}
    for name_, target in links.items():
        (wd / name_).symlink_to(target)
    (wd / "DATA").mkdir()
    for split in ("train", "test"):
        (wd / "DATA" / split).symlink_to(data / "cub100" / split)
    if sandbox["bundles"]:  # the first bundle an earlier block deployed for this machine (not a Jetson's)
        (wd / "BUNDLE").symlink_to(sandbox["bundles"][0])
    return wd


def outputs_named(text: str, variables: dict[str, str] | None = None) -> list[str]:
    """Paths that edgefg command lines in ``text`` say they write."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        if "edgefg" not in line.lower():  # `edgefg …`, or `$EDGEFG …` in the scripts
            continue
        for var, value in (variables or {}).items():
            line = line.replace("${" + var + "}", value).replace("$" + var, value)
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for flag, value in zip(words, words[1:]):
            if flag in OUTPUT_FLAGS and "$" not in value:
                found.append(value)
    return found


def _apply(body: str, markers) -> str:
    for kind, arg in markers:
        if kind == "replace":
            m = REPLACE.match(arg)
            assert m, f"bad replace marker: {arg}"
            assert m.group(1) in body, f"replace marker names text the block does not have: {m.group(1)!r}"
            body = body.replace(m.group(1), m.group(2))
    return body


BLOCKS = readme_blocks()


def test_every_readme_block_is_run_or_says_why_not():
    for block_id, lang, body, markers in BLOCKS:
        kinds = [k for k, _ in markers]
        assert lang in ("bash", "python", "toml") or "skip" in kinds, f"{block_id}: a {lang} block the docs test cannot run (add a skip marker)"
        for kind, arg in markers:
            if kind == "skip":
                assert re.fullmatch(r"\(.{10,}\)", arg), f"{block_id}: a skip needs a reason in brackets: {arg!r}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_block(block, sandbox):
    block_id, lang, body, markers = block
    skip = [arg for kind, arg in markers if kind == "skip"]
    if skip:
        pytest.skip(f"README says: {skip[0].strip('()')}")
    body = _apply(body, markers)
    if lang == "toml":
        from edgefg.compress.recipes import load_recipe

        path = sandbox["root"] / "recipe.toml"
        path.write_text(body)
        _, steps = load_recipe(str(path))
        assert steps, "the README's recipe has no steps"
        return
    wd = _workdir(sandbox, block_id)
    if lang == "python":
        (wd / "snippet.py").write_text(body)
        cmd = [sys.executable, "snippet.py"]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", body]
    r = subprocess.run(cmd, cwd=wd, env=sandbox["env"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{block_id} exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    for out in outputs_named(body) + (["runs/api/bundle-int8"] if lang == "python" else []):
        assert (wd / out).exists(), f"{block_id}: the text says it writes '{out}', which is not there"
    for manifest in sorted(wd.glob("*/manifest.json")) + sorted(wd.glob("runs/*/*/manifest.json")):
        if manifest.parent.is_symlink():  # BUNDLE itself
            continue
        if (manifest.parent / "target.toml").is_file() and '"tensorrt"' not in manifest.read_text():
            sandbox["bundles"].append(manifest.parent)


EXAMPLES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "examples").rglob("*.sh"))


def _script_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=\$\{\w+:-([^}$]*)\}$", text, re.M))


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_script(script, sandbox):
    text = (REPO / script).read_text(encoding="utf-8")
    if re.search(r"^# docs-test: skip (\(.{10,}\))$", text, re.M):
        pytest.skip(f"{script} says: " + re.search(r"^# docs-test: skip \((.*)\)$", text, re.M).group(1))
    out = sandbox["root"] / re.sub(r"\W+", "_", script)
    env = {**sandbox["env"], "OUT": str(out), "EDGEFG": f"{sys.executable} -m edgefg"}
    r = subprocess.run(["bash", str(REPO / script)], cwd=sandbox["root"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{script} exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    variables = {**_script_defaults(text), "OUT": str(out)}
    named = outputs_named(text, variables)
    assert named, f"{script}: no outputs found to check"
    for path in named:
        assert Path(path).exists(), f"{script}: the script says it writes '{path}', which is not there"
