"""The package's shape: stage packages in one dependency order, no cycles, no private names
used across modules, modules a newcomer can read (issue #14).

These tests read the sources with ``ast`` (nothing is imported), so they hold for lazy imports
inside functions as much as for the ones at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "joulebench"

#: Stage packages in dependency order: a module may import from its own package and from packages
#: earlier in this list. Packages in one tuple are peers and may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("energy",),
    ("provenance",),
    ("models",),
    ("workload",),
    ("study",),
    ("harness", "serving"),
    ("results",),
    ("cli",),
]
RANK = {name: rank for rank, group in enumerate(LAYERS) for name in group}
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def resolve(name: str) -> str | None:
    """The joulebench module that dotted ``name`` refers to (a module or a name in one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every joulebench import in ``name``."""
    found = []
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("joulebench.") and (target := resolve(alias.name)):
                    found.append((target, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not (base == "joulebench" or base.startswith("joulebench.")):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.append((full, [], node.lineno))
                elif target := resolve(base):
                    found.append((target, [alias.name], node.lineno))
    return found


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_stage_packages_are_the_layers():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(RANK), "a stage package is missing from LAYERS or from the disk"


def test_dependencies_run_one_way():
    wrong = []
    for name in MODULES:
        here = stage(name)
        if here is None:  # joulebench/__init__ and __main__ sit above everything
            continue
        for target, _, line in imports(name):
            there = stage(target)
            if there is None or there == here:
                continue
            if RANK[there] >= RANK[here]:
                wrong.append(f"{name}:{line} imports {target} ({here} may not depend on {there})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {t for t, _, _ in imports(name) if t != name} for name in MODULES}
    # a package __init__ that re-exports is part of its modules' graph, not a cycle of its own
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                if not all(MODULES[m].name == "__init__.py" or m == nxt for m in cycle[:-1]):
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_used_outside_its_module():
    wrong = []
    for name, tree in TREES.items():
        aliases: dict[str, str] = {}
        for target, taken, line in imports(name):
            wrong += [
                f"{name}:{line} imports {t} from {target}" for t in taken if t.startswith("_")
            ]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "joulebench" in node.module:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_readable(name):
    source = MODULES[name].read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (ceiling {MAX_LINES})"
    docstring = ast.get_docstring(TREES[name])
    assert docstring and "TODO" not in docstring, f"{name} needs a docstring saying what it owns"
