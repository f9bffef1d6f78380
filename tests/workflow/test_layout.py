"""The package's shape: stage packages in one dependency order, no cycles, no private names
used across modules, modules a newcomer can read (issue #14).

These tests read the sources with ``ast`` (nothing is imported), so they hold for lazy imports
inside functions as much as for the ones at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "joulebench"

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
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(TREES[name], package)


def absolute(package: str, module: str | None, level: int) -> str:
    """The module ``from <level dots><module> import`` names, written in ``package``."""
    if not level:
        return module or ""
    anchor = package.split(".")
    anchor = anchor[: len(anchor) - level + 1]
    return ".".join([*anchor, module] if module else anchor)


def imports_in(tree: ast.AST, package: str) -> list[tuple[str, list[str], int]]:
    """The joulebench imports of a module of ``package``: ``import a.b [as c]``, ``from`` imports
    (relative ones too) and ``importlib.import_module("joulebench...")`` / ``__import__`` calls
    with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("joulebench.") and (target := resolve(alias.name)):
                    found.append((target, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = absolute(package, node.module, node.level)
            if not (base == "joulebench" or base.startswith("joulebench.")):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.append((full, [], node.lineno))
                elif target := resolve(base):
                    found.append((target, [alias.name], node.lineno))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in DYNAMIC)
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            level = len(node.args[0].value) - len(node.args[0].value.lstrip("."))
            where = package if level else None
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                where = str(node.args[1].value)  # import_module(".x", "joulebench.y")
            text = node.args[0].value.lstrip(".")
            full = absolute(where, text, level) if level and where else text
            if full.startswith("joulebench.") and (target := resolve(full)):
                found.append((target, [], node.lineno))
    return found


#: Functions that import a module named by a string (besides ``importlib.import_module``).
DYNAMIC = {"import_module", "__import__"}


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_stage_packages_are_the_layers():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(RANK), "a stage package is missing from LAYERS or from the disk"


def layer_violations(name: str, edges: list[tuple[str, list[str], int]]) -> list[str]:
    """The imports among ``edges`` (of module ``name``) that go against the layer order."""
    here = stage(name)
    if here is None:  # joulebench/__init__ and __main__ sit above everything
        return []
    wrong = []
    for target, _, line in edges:
        there = stage(target)
        if there is None or there == here:
            continue
        if RANK[there] >= RANK[here]:
            wrong.append(f"{name}:{line} imports {target} ({here} may not depend on {there})")
    return wrong


def test_dependencies_run_one_way():
    edges = {name: imports(name) for name in MODULES}
    # the parse sees the package's imports at all (a parser finding none would pass below)
    assert sum(map(len, edges.values())) > 100, "parsed almost no joulebench imports"
    assert ("joulebench.core.errors", ["JoulebenchError"]) in [
        (t, n) for t, n, _ in edges["joulebench.provenance.codehash"]
    ]
    wrong = [w for name, found in edges.items() for w in layer_violations(name, found)]
    assert not wrong, "\n".join(wrong)


#: A module of the energy package that imports the results package in every way Python can.
PLANTED = """
import importlib
import joulebench.results.plots as p
from joulebench.results import plots
from ..results import figures
from ..results.plots import FIGURES
from joulebench.energy.meters import _private
import joulebench.energy.meters as m


def late():
    from joulebench.results import stats
    importlib.import_module("joulebench.results.audit")
    importlib.import_module(".derived", "joulebench.results")
    return m._Windows
"""


def test_the_checks_see_every_kind_of_import():
    """Planted faults: each import of a later stage is found and flagged, whatever its form."""
    edges = imports_in(ast.parse(PLANTED), "joulebench.energy")
    flagged = layer_violations("joulebench.energy.fake", edges)
    targets = sorted({line.split(" imports ")[1].split(" ")[0] for line in flagged})
    assert targets == [
        "joulebench.results.audit",
        "joulebench.results.derived",
        "joulebench.results.figures",
        "joulebench.results.plots",
        "joulebench.results.stats",
    ]
    assert len(flagged) == 7, flagged
    assert private_uses(ast.parse(PLANTED), "joulebench.energy") == [
        "imports _private from joulebench.energy.meters",
        "uses m._Windows",
    ]


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Import cycles in ``graph`` (module → modules it imports)."""
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

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles():
    graph = {name: {t for t, _, _ in imports(name) if t != name} for name in MODULES}
    cycles = find_cycles(graph)
    assert not cycles, "\n".join(cycles)


def test_the_cycle_check_sees_a_cycle():
    """Planted fault: meters -> rapl -> meters (the cycle issue #14 removed) is reported."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    graph["joulebench.energy.meters"] = {"joulebench.energy.rapl"}
    graph["joulebench.energy.rapl"] = {"joulebench.energy.meters"}
    assert find_cycles(graph) == [
        "joulebench.energy.meters -> joulebench.energy.rapl -> joulebench.energy.meters"
    ]


def private_uses(tree: ast.AST, package: str) -> list[str]:
    """Private names a module of ``package`` imports from, or reads off, a joulebench module."""
    wrong = [
        f"imports {t} from {target}"
        for target, taken, _ in imports_in(tree, package)
        for t in taken
        if t.startswith("_")
    ]
    aliases: set[str] = set()  # local names bound to a joulebench module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.asname and a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = absolute(package, node.module, node.level)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            wrong.append(f"uses {node.value.id}.{node.attr}")
    return wrong


def test_no_private_name_is_used_outside_its_module():
    wrong = []
    for name, tree in TREES.items():
        package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        wrong += [f"{name}: {w}" for w in private_uses(tree, package)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_readable(name):
    source = MODULES[name].read_text()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (ceiling {MAX_LINES})"
    docstring = ast.get_docstring(TREES[name])
    assert docstring and "TODO" not in docstring, f"{name} needs a docstring saying what it owns"
