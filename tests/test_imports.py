"""No import circle anywhere in edgefg/, counting imports inside functions and under TYPE_CHECKING
(hiding a circle in a function-level import only moves the failure to run time)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgefg"


def module_graph() -> dict[str, set[str]]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("edgefg"):
                for alias in node.names:  # `from edgefg.x import y`: y may be a module of its own
                    dep = resolve(f"{node.module}.{alias.name}") if f"{node.module}.{alias.name}" in mods else resolve(node.module)
                    deps.add(dep)
            elif isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names if a.name.startswith("edgefg"))
        # importing a submodule runs its package's __init__: that edge is not a circle of ours
        graph[mod] = {d for d in deps if d and d != mod and not mod.startswith(d + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_package():
    assert circles(module_graph()) == []


def test_the_scanner_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_runtime_public_names_resolve_and_the_folders_hold_their_wing():
    """Every name in edgefg.runtime.__all__ resolves (lazily) to an object of the wing it belongs to."""
    import edgefg.runtime as rt

    wing = {"stream": "serve", "run_pipeline": "serve", "run_cameras": "serve", "Pipeline": "serve", "RunOptions": "loop",
            "CameraLoop": "loop", "MultiPipeline": "loop", "stream_cameras": "loop", "CameraConfig": "capture",
            "LoadedBundle": "engine", "open_source": "capture"}
    assert set(rt.__all__) == set(wing)
    for name in rt.__all__:
        module = getattr(rt, name).__module__
        assert module.split(".")[2] == wing[name], f"edgefg.runtime.{name} comes from {module}"
    folders = {p.name for p in (PACKAGE / "runtime").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {"backends", "engine", "capture", "loop", "outputs"}
    loose = sorted(p.name for p in (PACKAGE / "runtime").glob("*.py"))
    assert loose == ["__init__.py", "bench.py", "collect_cli.py", "install.py", "serve.py"], loose


def test_the_device_runtime_has_no_type_findings_left():
    """The on-device part is type-clean: .ci/mypy-baseline.txt (which only shrinks) lists nothing under edgefg/runtime/."""
    baseline = (PACKAGE.parent / ".ci" / "mypy-baseline.txt").read_text(encoding="utf-8").splitlines()
    assert baseline and not [line for line in baseline if line.startswith("edgefg/runtime/")]
