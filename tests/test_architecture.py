"""The shape of the package, checked from its source: no import circle between its parts, no
function past ~80 lines, one command per CLI module. Run as a script for the figures:
`python tests/test_architecture.py`."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgekd"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _part(module: str) -> str:
    """The part a module belongs to: its folder under edgekd/ (edgekd.search), or the top-level
    module itself (edgekd.config)."""
    return ".".join(module.split(".")[:2])


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # from X import a, b: a name that is a module of X counts as that module, else X itself
    subs = [f"{base}.{a.name}" for a in node.names]
    found = [m for m in subs if _is_module(m)]
    return found + ([base] if len(found) < len(subs) else [])


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """module -> edgekd modules it imports (anywhere in the file, lazy imports included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        mod = _module_name(path)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(mod, path.name == "__init__.py", node)
            else:
                continue
            graph[mod] |= {t for t in targets if t == "edgekd" or t.startswith("edgekd.")}
        graph.setdefault(mod, set())
    return graph


def part_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more parts (Tarjan), each sorted."""
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, targets in graph.items():
        for t in targets:
            a, b = _part(mod), _part(t)
            if a != b and b != "edgekd":
                edges[a].add(b)
    nodes = set(edges) | {b for v in edges.values() for b in v}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return groups


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(module:function, lines) for every function longer than `limit` lines."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out.append((f"{_module_name(path)}:{node.name}", n))
    return sorted(out, key=lambda x: -x[1])


def cli_commands() -> dict[str, int]:
    """CLI module -> number of top-level commands it adds to `app` (`@app.command` functions and
    `app.add_typer` groups)."""
    folder = PACKAGE / "cli"
    out = {}
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / "cli.py"]:
        n = 0
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "app"
                    and node.attr in ("command", "add_typer")):
                n += 1
        out[path.name] = n
    return out


def test_no_import_circle_between_parts():
    assert part_cycles(import_graph()) == []


def test_the_checker_finds_a_circle():
    graph = {"edgekd.a.x": {"edgekd.b.y"}, "edgekd.b.y": {"edgekd.c"}, "edgekd.c": {"edgekd.a.z"},
             "edgekd.a.z": set()}
    assert part_cycles(graph) == [["edgekd.a", "edgekd.b", "edgekd.c"]]
    assert part_cycles({"edgekd.a.x": {"edgekd.a.y"}, "edgekd.a.y": {"edgekd.a.x"}}) == []


def test_no_function_is_longer_than_the_limit():
    assert long_functions() == []


def test_each_cli_module_holds_at_most_one_command():
    counts = cli_commands()
    assert all(n <= 1 for n in counts.values()), counts
    assert sum(counts.values()) == 10  # optimize, profile, export, benchmark, report, targets, predict, calibrate,
    # agent, update


if __name__ == "__main__":
    g = import_graph()
    print("circles between parts:", part_cycles(g))
    print(f"functions over {MAX_FUNCTION_LINES} lines:", long_functions())
    print("longest functions:", long_functions(40)[:8])
    print("commands per cli module:", cli_commands())
    sys.exit(0)
