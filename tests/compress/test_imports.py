"""The compress package has no import circle, counting imports inside functions and under TYPE_CHECKING."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edgefg" / "compress"


def _imports() -> dict[str, set[str]]:
    mods = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgefg.compress"):
                parts = node.module.split(".")
                if len(parts) > 2:
                    deps.add(parts[2])
                else:  # from edgefg.compress import steps
                    deps.update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[2] for a in node.names if a.name.startswith("edgefg.compress.") and len(a.name.split(".")) > 2)
        graph[name] = (deps & set(mods)) - {name}
    return graph


def test_no_import_circle_in_compress():
    graph = _imports()
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                circles.append(" → ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not circles, circles
