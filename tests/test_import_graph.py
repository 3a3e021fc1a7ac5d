"""tav/'s modules import each other without a cycle, counting imports inside functions too.

Why: a lazy import inside a function still makes a circle (validation -> memory_plan -> tuning ->
validation was one), and circles are what make a module's import order matter and its tests fragile.
The graph is read from the source (ast), so nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TAV = Path(__file__).resolve().parents[1] / "tav"
NODES = Path(__file__).resolve().parents[1] / "nodes"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports anywhere in its body}, for every .py under ``root``."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from . import x`` imports the submodule x when there is one, else an attribute of base
                edges |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_tav_has_no_import_cycle() -> None:
    graph = import_graph(TAV)
    assert "tav.memory_plan" in graph["tav.cli"] and "tav.validation" in graph["tav.memory_plan"]  # read right
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_nodes_have_no_import_cycle() -> None:
    """The adapters too: a circle there (model <-> native) stops the whole pack from loading in ComfyUI."""
    graph = import_graph(NODES)
    assert "nodes.files" in graph["nodes.video"] and "nodes.native" in graph["nodes.model"]  # read right
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


@pytest.mark.parametrize(
    ("a", "b", "import_in_b"),
    [
        ("memory_plan.py", "validation.py", "def f():\n    from .memory_plan import check_fits\n"),  # the old one
        ("job_size.py", "validation.py", "def f():\n    from .job_size import memory_budget\n"),  # lazy
        ("weights.py", "__init__.py", "def f():\n    from tav import weights\n"),  # absolute, submodule
    ],
)
def test_a_planted_cycle_is_found(tmp_path: Path, a: str, b: str, import_in_b: str) -> None:
    """The check fails when a (lazy, relative or absolute) import closes a circle."""
    copy = tmp_path / "tav"
    for f in TAV.rglob("*.py"):
        (copy / f.relative_to(TAV)).parent.mkdir(parents=True, exist_ok=True)
        (copy / f.relative_to(TAV)).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    assert find_cycle(import_graph(copy)) == []
    target = copy / b
    target.write_text(target.read_text(encoding="utf-8") + "\n" + import_in_b, encoding="utf-8")
    cycle = find_cycle(import_graph(copy))
    assert cycle and f"tav.{a.removesuffix('.py')}" in cycle, cycle
