"""What the benchmark scripts share: the paths, the edgefg CLI as a subprocess, the machine line, JSON
files, and the generated result blocks of the README and the docs pages.

Standard library only at import time (``cnn_recovery.py train`` runs on a lent GPU machine with little
installed); edgefg is imported where it is used.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefg.outputs import write_text

# -- paths ------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEFG_DATA", REPO.parent / "shared" / "data"))  # the real data: ../shared/data unless EDGEFG_DATA
MODEL = DATA / "models" / "mobilenetv2_cub100"  # the real fine-grained model most figures start from
CUB = DATA / "cub100"
TRAIN, TEST = CUB / "train", CUB / "test"
RUNS = REPO / "runs"  # work folders: models, bundles, caches (not committed)
RESULTS = REPO / "results"  # the figures' JSON and markdown (committed)
OUT = REPO / "benchmarks" / "out"  # the speed suite's and the field-loop figures' JSON (committed)
COMPRESS_RESULTS = RESULTS / "compress"  # compress_figures.py and the two ViT figures it runs
COMPRESS_RUNS = RUNS / "compress"
EFFNET_MODEL = RUNS / "models" / "efficientnet_lite0_cub100"  # the fine-tuned EfficientNet-Lite0 (efficientnet_lite0_cub.py, cnn_recovery.py)


def rel(path: Path | str, root: Path = REPO) -> str:
    """``path`` relative to the checkout (``root``) when inside it, else as given."""
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def shown(args: list[Any] | tuple[Any, ...]) -> str:
    """Command-line arguments as stored in the results: the checkout's paths relative, its parent as ``..``."""
    return " ".join(str(a).replace(str(REPO) + "/", "").replace(str(REPO.parent), "..") for a in args)


# -- the edgefg CLI as a subprocess -----------------------------------------------------------------


def edgefg_command(*args: object) -> list[str]:
    """``edgefg ARGS`` as a subprocess argv: this interpreter's ``-m edgefg`` (no console script needed)."""
    return [sys.executable, "-m", "edgefg", *map(str, args)]


def edgefg_env(**extra: str) -> dict[str, str]:
    """The environment of an edgefg subprocess: this checkout first on PYTHONPATH (its edgefg, not another install)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@dataclass
class CliRun:
    """One finished ``edgefg`` subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_edgefg(*args: object, ok: Collection[int] | None = (0,), echo: bool = False) -> CliRun:
    """Run ``edgefg ARGS`` from the checkout's root with its output captured. ``ok``: the exit codes that
    are not a failure (None: any); another one stops the script (SystemExit with the tail of stderr).
    ``echo``: print ``$ edgefg …`` first."""
    argv = [str(a) for a in args]
    if echo:
        print(f"$ edgefg {shown(argv)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(edgefg_command(*argv), cwd=REPO, env=edgefg_env(), text=True, capture_output=True)
    run = CliRun(argv, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)
    if ok is not None and run.returncode not in ok:
        raise SystemExit(f"edgefg {' '.join(argv[:1])} failed (exit {run.returncode}): edgefg {shown(argv)}\n{run.stderr[-3000:]}")
    return run


def edgefg_compress(args: list[Any], log: Path) -> dict[str, Any]:
    """``edgefg compress ARGS`` exactly as a user runs it (printed, and stored as ``command``); its output
    goes to ``log``. Returns {command, exit_code, seconds, report}: the report.json of its ``-o`` folder
    (a run that fails its accuracy budget still writes one); no report stops the script."""
    argv = ["compress", *map(str, args)]
    out = Path(argv[argv.index("-o") + 1])
    command = f"edgefg {shown(argv)}"
    print(f"$ {command}", flush=True)
    run = run_edgefg(*argv, ok=None)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(run.output, encoding="utf-8")
    if not (out / "report.json").is_file():
        print(run.stdout[-3000:], run.stderr[-3000:])
        raise SystemExit(f"{out.name}: no report (exit {run.returncode})")
    print(f"  exit {run.returncode}, {run.seconds / 60:.1f} min", flush=True)
    return {"command": command, "exit_code": run.returncode, "seconds": round(run.seconds, 1),
            "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


def compress_summary(args: list[Any], name: str, extra: dict[str, Any] | None = None, out: Path = COMPRESS_RESULTS) -> dict[str, Any]:
    """:func:`edgefg_compress`, its summary (command, exit code, wall time, ``extra``, report) stored as
    ``<out>/<name>.json`` (out: results/compress) with its log and its report.md/png beside it."""
    out_dir = Path(str(args[list(map(str, args)).index("-o") + 1]))
    run = edgefg_compress(args, out / f"{name}.log")
    for f in ("report.md", "report.png"):
        if (out_dir / f).is_file():
            shutil.copy2(out_dir / f, out / f"{name}-{f}")
    summary = {**{k: run[k] for k in ("command", "exit_code", "seconds")}, **(extra or {}), "report": run["report"]}
    write_json(out / f"{name}.json", summary)
    return summary


# -- the machine ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, Any]:
    from edgefg.runtime.bench import machine_info as edgefg_machine_info

    return edgefg_machine_info()


def machine_info() -> dict[str, Any]:
    """:func:`edgefg.runtime.bench.machine_info` (CPU model, cores, SIMD flags, versions), read once per run."""
    return copy.deepcopy(_machine())


def cpu_model() -> str:
    """The CPU model, as every edgefg timing reports it."""
    return str(machine_info().get("cpu") or platform.processor() or platform.machine() or "unknown CPU")


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which a shared machine may hold below ``os.cpu_count()``."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_line(cores: int | None = None, extra: str = "") -> str:
    """``CPU model (N cores[; extra])``: N = ``cores``, else ``os.cpu_count()`` as machine_info reports it."""
    n = cores if cores is not None else machine_info().get("cores")
    return f"{cpu_model()} ({n} cores{'; ' + extra if extra else ''})"


# -- files ------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` via edgefg's one atomic writer (temporary file beside ``path`` + rename): a stopped run leaves the old file or the new, never half."""
    write_text(path, text)


def write_json(path: Path, obj: Any, indent: int = 2) -> Path:
    """``obj`` as indented JSON (+ newline) at ``path``, folders made; values JSON lacks (paths, numpy scalars) as str."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")
    return path


# -- result blocks ----------------------------------------------------------------------------------


class BlockError(Exception):
    """No file, or more than one, holds a block's marker pair."""


def block_files(root: Path = REPO) -> list[Path]:
    """Where result blocks may live: README.md and every docs/**/*.md under ``root``."""
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + sorted((root / "docs").rglob("*.md"))


def _markers(name: str) -> tuple[str, str, re.Pattern[str]]:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    return start, end, re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)


def find_block(name: str, root: Path = REPO) -> Path:
    """The one file of README.md and docs/**/*.md (under ``root``) that holds the marker pair
    ``<!-- NAME:start -->`` … ``<!-- NAME:end -->`` once. BlockError, saying what was found, when no
    file holds it or it is there more than once (in two files, or twice in one)."""
    start, end, pattern = _markers(name)
    hits, halves = [], []
    for f in block_files(root):
        text = f.read_text(encoding="utf-8")
        n = len(pattern.findall(text))
        if n:
            hits.append((f, n))
        elif start in text or end in text:
            halves.append(f)
    where = f"README.md or docs/**/*.md under {root}"
    if not hits:
        half = f"; {', '.join(rel(f, root) for f in halves)} has one marker without the other" if halves else ""
        raise BlockError(f"no file holds the marker pair {start} … {end} ({where}){half}. "
                         "The scripts never create markers: put the pair where the table belongs")
    if len(hits) > 1 or hits[0][1] > 1:
        raise BlockError(f"the marker pair {start} … {end} is in more than one place: "
                         + ", ".join(f"{rel(f, root)}" + (f" ({n} times)" if n > 1 else "") for f, n in hits)
                         + ". Keep exactly one")
    return hits[0][0]


def write_block(name: str, markdown: str, path: Path | None = None, root: Path = REPO) -> Path | None:
    """Put ``markdown`` between the markers of block ``name`` in the file that holds them, found by
    :func:`find_block` (``path``: that file instead, which must hold the pair once). Returns the file
    (also when it already said exactly this: then it is not rewritten), or None after saying on stderr
    why nothing was written."""
    start, end, pattern = _markers(name)
    try:
        target = Path(path) if path is not None else find_block(name, root)
        try:
            text = target.read_text(encoding="utf-8")
        except OSError as exc:
            raise BlockError(f"cannot read {target}: {exc}") from None
        if len(pattern.findall(text)) != 1:
            raise BlockError(f"{target} holds the marker pair {start} … {end} {len(pattern.findall(text))} times, not once")
    except BlockError as exc:
        print(f"block '{name}' not written: {exc}", file=sys.stderr)
        return None
    new = pattern.sub(lambda _: f"{start}\n{markdown}{end}", text)
    if new == text:
        print(f"block '{name}' of {rel(target, root)}: unchanged")
    else:
        _write_atomic(target, new)
        print(f"block '{name}' of {rel(target, root)}: written")
    return target
