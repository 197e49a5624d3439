"""The floors of the house: analysis, reports and workloads read recordings and
/proc (procfs) but never reach into collectors/ or probes/; and no two modules
import each other, directly or round a longer circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "herdtrace"
UPPER = ("herdtrace.collectors", "herdtrace.probes")
LOWER = ("analysis", "reports", "workloads")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """What a module imports: `from pkg import mod` is mod, not pkg's __init__."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(subs or {node.module})
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found & modules


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def test_lower_floors_import_nothing_from_collectors_or_probes() -> None:
    for name, deps in graph().items():
        if name.split(".")[1:2] and name.split(".")[1] in LOWER:
            assert not [d for d in deps if d.startswith(UPPER)], name


def test_no_import_circles() -> None:
    g = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in g[node]:
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path[path.index(dep):], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in g:
        if node not in state:
            visit(node, [node])
