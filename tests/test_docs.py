"""The README, the documentation pages and the example scripts, run as written on a small slice of the real data.

Every fenced ``bash``/``python`` block of README.md and of every page under docs/ (README first, then
the pages in the order of mkdocs.yml's nav, then any page the nav lacks) runs in a fresh folder where
the placeholders a reader replaces exist as real paths (``MODEL``, ``DATA/train``, ``train/``, ``models/…``, ``cub/…``
link to a slice of ``EDGEFG_DATA``; ``BUNDLE`` to the bundle an earlier block wrote), with ``edgefg``
on the PATH. A comment right before a block may say::

    <!-- docs-test: skip (why) -->                     the block is not run; the reason shows as the skip
    <!-- docs-test: replace "A" "B" (why) -->          run with A replaced by B (a camera the machine lacks)

``toml`` blocks are loaded as compression recipes. The example scripts run with only the overrides
they document (EDGEFG_DATA, OUT, EDGEFG). After each run, every file or folder the text names as
an output (``-o``, ``--output``, ``--json``, ``--junit``, ``--markdown``) must exist.

Without the data: the site builds with ``mkdocs build --strict`` (broken links fail), every result
block's markers (``<!-- NAME:start -->`` … ``<!-- NAME:end -->``) appear once across README.md and
docs/, the README stays a summary (≤ 300 lines, the two commands first, links that resolve), every
figure its results table quotes is still in the block it names, and every flag an ``edgefg CMD`` line of
the pages shows is an option of CMD.
"""
from __future__ import annotations

import importlib.util
import json
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
README_MAX_LINES = 300
NAV_PAGE = re.compile(r"^\s*-\s+(?:[^\n]*?:\s+)?([\w./-]+\.md)\s*$", re.M)  # `- Title: page.md` or `- page.md`
RESULT_BLOCK = re.compile(r"<!-- ([\w-]+):(start|end) -->")


def doc_pages() -> list[Path]:
    """README.md, then docs/ pages in mkdocs.yml's nav order, then any docs page the nav lacks (sorted)."""
    config = REPO / "mkdocs.yml"
    nav = [REPO / "docs" / p for p in NAV_PAGE.findall(config.read_text(encoding="utf-8"))] if config.is_file() else []
    pages = [p for p in dict.fromkeys(nav) if p.is_file()]
    rest = sorted(set((REPO / "docs").rglob("*.md")) - set(pages))
    return [REPO / "README.md", *pages, *rest]


def doc_blocks() -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(id, language, body, markers) of every fenced block of README.md and the docs pages, in order."""
    out = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        rel = page.relative_to(REPO).as_posix()
        for m in BLOCK.finditer(text):
            markers = MARKER.findall(m.group(1))
            line = text.count("\n", 0, m.start(2)) + 1
            out.append((f"{rel}:{line}-{m.group(2)}", m.group(2), m.group(3), markers))
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


BLOCKS = doc_blocks()


def test_every_doc_block_is_run_or_says_why_not():
    for block_id, lang, _body, markers in BLOCKS:
        kinds = [k for k, _ in markers]
        assert lang in ("bash", "python", "toml") or "skip" in kinds, f"{block_id}: a {lang} block the docs test cannot run (add a skip marker)"
        for kind, arg in markers:
            if kind == "skip":
                assert re.fullmatch(r"\(.{10,}\)", arg), f"{block_id}: a skip needs a reason in brackets: {arg!r}"


@pytest.mark.realdata
@pytest.mark.parametrize("block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_doc_block(block, sandbox):
    block_id, lang, body, markers = block
    skip = [arg for kind, arg in markers if kind == "skip"]
    if skip:
        pytest.skip(f"{block_id.split(':')[0]} says: {skip[0].strip('()')}")
    body = _apply(body, markers)
    if lang == "toml":
        from edgefg.compress.recipes import load_recipe

        path = sandbox["root"] / "recipe.toml"
        path.write_text(body)
        _, steps = load_recipe(str(path))
        assert steps, f"{block_id}: the recipe has no steps"
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


def _check_cub_birds(out: Path, stdout: str, env: dict[str, str]) -> None:
    assert json.loads((out / "validate.json").read_text())["passed"] is True
    assert len(json.loads((out / "bench.json").read_text())["results"]) == 2
    first = sorted(p for p in (Path(env["EDGEFG_DATA"]) / "cub100" / "test").iterdir() if p.is_dir())[0]
    images = len([p for p in first.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")])
    assert len((out / "run.jsonl").read_text().splitlines()) == min(10, images)  # --max-frames 10 of the first class folder


def _check_jetson_workstation(out: Path, stdout: str, env: dict[str, str]) -> None:
    assert "trtexec" in stdout and (out / "bundle-jetson-orin-nano-int8.tgz").stat().st_size > 0


# what a script's run must show beyond writing the files it names (one run each: the scripts are not run twice)
EXAMPLE_CHECKS = {"examples/cub_birds_openvino/run.sh": _check_cub_birds, "examples/jetson_deploy/workstation.sh": _check_jetson_workstation}


def _script_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=\$\{\w+:-([^}$]*)\}$", text, re.M))


@pytest.mark.realdata
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
    if script in EXAMPLE_CHECKS:
        EXAMPLE_CHECKS[script](out, r.stdout, env)


# --- the site and the README as a summary (no data needed) ---------------------------------------------

def test_result_blocks_are_unique_and_closed():
    """A benchmark rewrites its block wherever it is: its two markers must exist once, start before end."""
    seen: dict[str, list[tuple[str, str, int]]] = {}
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for m in RESULT_BLOCK.finditer(text):
            seen.setdefault(m.group(1), []).append((m.group(2), page.relative_to(REPO).as_posix(), m.start()))
    problems = []
    for name, marks in sorted(seen.items()):
        kinds = [k for k, _, _ in marks]
        files = sorted({f for _, f, _ in marks})
        if kinds != ["start", "end"] or len(files) != 1:
            problems.append(f"block '{name}': markers {kinds} in {files} (want one start, then one end, in one file)")
    assert not problems, "\n".join(problems)
    assert seen, "no result blocks found in README.md or docs/"


def test_readme_is_a_summary_that_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    n = text.count("\n")
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: move detail into a page under docs/)"
    first = BLOCK.search(text)
    assert first and first.start() < 400, "README.md must open with the block of its two commands"
    commands = [ln.split("#")[0].strip() for ln in first.group(3).splitlines()]
    assert commands[:2] == ["make demo", "make test"], commands
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.strip().startswith("make ")]
    assert ci and all(c in commands for c in ci), f".ci/run runs {ci}; the README's test command is {commands[1:2]}"


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets, "README.md links no pages"
    missing = [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")
               and not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    linked = {t.split("#")[0] for t in targets}
    nav = {f"docs/{p}" for p in NAV_PAGE.findall((REPO / "mkdocs.yml").read_text(encoding="utf-8"))}
    assert not nav - linked, f"pages of the site the README does not link: {sorted(nav - linked)}"


NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def readme_result_rows() -> list[tuple[str, str, str, str, str]]:
    """(result, figures, block, page, command) of each row of the README's results table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] == "result" or set(cells[0]) <= {"-"}:
            continue
        block, page, cmd = (re.search(p, cells[2]) for p in (r"^`([\w-]+)`", r"\]\((docs/[^)#]+)", r"`(python [^`]+)`"))
        assert block and page and cmd, f"README results row needs `block`, [page](docs/…) and `python …` command: {line}"
        rows.append((cells[0], cells[1], block.group(1), page.group(1), cmd.group(1)))
    return rows


def test_readme_results_quote_their_blocks():
    """Every number the README's summary quotes is in the named block, in the named page, with that command."""
    blocks = {}
    for page in doc_pages():
        for m in re.finditer(r"<!-- ([\w-]+):start -->\n(.*?)<!-- \1:end -->", page.read_text(encoding="utf-8"), re.S):
            blocks[m.group(1)] = (page.relative_to(REPO).as_posix(), m.group(2))
    rows = readme_result_rows()
    assert rows, "README.md has no results table under '## Results'"
    problems = []
    for result, figures, block, page, cmd in rows:
        if block not in blocks:
            problems.append(f"{result}: no block '{block}'")
            continue
        where, body = blocks[block]
        if where != page:
            problems.append(f"{result}: block '{block}' is in {where}, the README says {page}")
        if cmd not in body:
            problems.append(f"{result}: block '{block}' was not written by `{cmd}`")
        for n in NUMBER.findall(re.sub(r"`[^`]*`", "", figures)):
            if not re.search(rf"(?<![\d.,]){re.escape(n)}(?![\d]|[.,]\d)", body):
                problems.append(f"{result}: {n} is not in block '{block}' (re-read the figure from {where})")
    assert not problems, "the README's results summary no longer matches its blocks:\n" + "\n".join(problems)


def test_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict`, as `make docs` runs it: a broken link or anchor, or a page left out of the nav, fails."""
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {' and '.join(missing)} not installed (the dev extra includes the docs extra)")
        pytest.skip(f"{' and '.join(missing)} not installed here (pip install -e '.[docs]', or make docs); in CI this test runs")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
                        "--site-dir", str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert (tmp_path / "site" / "index.html").is_file()


def doc_command_lines() -> list[tuple[str, str]]:
    """(page, text) of every edgefg command line the pages show: lines of bash blocks, and `edgefg …` code spans."""
    out = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        rel = page.relative_to(REPO).as_posix()
        for m in BLOCK.finditer(text):
            if m.group(2) == "bash":
                out += [(rel, ln.split(" #")[0]) for ln in m.group(3).replace("\\\n", " ").splitlines() if "edgefg " in ln]
        out += [(rel, s) for s in re.findall(r"`(edgefg [^`]+)`", text)]
    return out


def test_doc_commands_use_real_options():
    """A flag right after `edgefg CMD` in a page is an option of CMD (the checker of tests/test_hints.py)."""
    from tests.test_hints import command_options, flag_problems

    options = command_options()
    lines = doc_command_lines()
    assert len(lines) > 20, f"found only {len(lines)} edgefg command lines in README.md and docs/"
    bad = [f"{page}: {p}  ({text[:120]})" for page, text in lines for p in flag_problems(text, options)]
    assert not bad, "\n".join(bad)
