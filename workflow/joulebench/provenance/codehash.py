"""Code hashes: the package code a workflow step runs, found by walking its import graph.

Snakemake's code trigger sees only a rule's ``run:`` block, so each rule passes
``source_hash(step)`` as a param: an edit to code the step runs reruns its jobs, other edits
rerun nothing. Each step names its entry points (:data:`STEPS`); what they reach is read with
:mod:`ast` (nothing is imported). Comments, docstrings and blank lines change no hash.

- *Loading* a module (an ``import`` of it or of a name in it; the package ``__init__`` above
  it) runs its module-level code: its module-level imports are loaded and what that code
  refers to is entered.
- *Entering* a function or class (an entry point, or a name entered code refers to, called or
  passed on) loads what its own imports name and enters what it refers to (a class with all
  its methods): a function-level import counts where its function can run, not wherever its
  module is loaded (the CLI loads registries for ``--help``, not engines).
- A module counts with its module-level code (classes whole) and the functions the step enters;
  a module given as an entry point enters all its functions.
- The CLI (:data:`DISPATCH`) dispatches every step: its module-level code enters nothing, and
  handlers registered with ``set_defaults(func=...)`` are entered only as a step's entry point.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from joulebench.core.errors import JoulebenchError

PACKAGE = "joulebench"
#: The package whose modules count function by function (see the module docstring).
DISPATCH = "joulebench.cli"
#: What every step runs: ``python -m joulebench COMMAND`` (the rules' ``run_step()`` helper).
COMMON: tuple[str, ...] = ("joulebench.__main__", "joulebench.cli:main")
#: Each workflow step's entry points: ``module:function`` for its CLI command handler(s), and a
#: module (all of whose functions count) for the code the handler runs.
STEPS: dict[str, tuple[str, ...]] = {
    "prepare-model": ("joulebench.cli.models:cmd_prepare_model", "joulebench.models.sources"),
    "variant": ("joulebench.cli.models:cmd_variant", "joulebench.models.variants"),
    "quantize": ("joulebench.cli.models:cmd_quantize", "joulebench.models.quantize"),
    "bench": ("joulebench.cli.bench:cmd_bench", "joulebench.harness.bench"),
    "aggregate": ("joulebench.cli.results:cmd_aggregate", "joulebench.results.derived"),
    "plot": (
        "joulebench.cli.results:cmd_plot",
        "joulebench.cli.results:cmd_plot_power",
        "joulebench.results.plots",
    ),
    "findings": ("joulebench.cli.results:cmd_findings", "joulebench.results.findings"),
    "audit": ("joulebench.cli.study:cmd_provenance", "joulebench.results.audit"),
    "serve": ("joulebench.cli.serving:cmd_serve", "joulebench.serving.session"),
    "aggregate-serving": (
        "joulebench.cli.serving:cmd_aggregate_serving",
        "joulebench.results.analysis",
    ),
    "plot-serving": (
        "joulebench.cli.serving:cmd_plot_serving",
        "joulebench.cli.serving:cmd_plot_serving_power",
        "joulebench.results.plots",
    ),
}
#: Bumped when the summary of a parsed module changes shape (it names the on-disk cache).
SUMMARY_VERSION = 3
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
DEFS = (*FUNCTIONS, ast.ClassDef)
Binding = tuple[str, str | None]  # (module, name in it); name None: the module itself


class CodeHashError(JoulebenchError):
    """A step is unknown, or the code a step runs cannot be read (a missing module)."""


def digest_of(node: ast.AST) -> str:
    return hashlib.sha256(ast.dump(node).encode()).hexdigest()


def strip_docstrings(tree: ast.AST) -> None:
    """Drop bare string statements (docstrings): they change nothing that runs."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            kept = [
                s
                for s in body
                if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                or not isinstance(s.value.value, str)
            ]
            node.body = kept or [ast.Pass()]


def absolute(name: str, is_init: bool, module: str | None, level: int) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in ``name``."""
    if level == 0:
        return module or ""
    base = name.split(".")[: None if is_init else -1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def registered_handlers(node: ast.AST) -> set[int]:
    """Ids of the nodes inside ``set_defaults(func=...)`` (handlers registered, not run)."""
    return {
        id(n)
        for call in ast.walk(node)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "set_defaults"
        for kw in call.keywords
        for n in ast.walk(kw.value)
    }


def dotted(node: ast.AST) -> list[str]:
    """``a.b.c`` as ["a", "b", "c"] for a name or an attribute chain on a name, else []."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        return [node.id]
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return [*inner, node.attr] if inner else []
    return []


def summarize(name: str, is_init: bool, text: str, relpath: str) -> dict[str, Any]:
    """What the walk needs of one module: its ``joulebench`` imports and the dotted names it
    refers to, per scope (a top-level function or class; "" for module-level code), its
    top-level definitions, and digests of its code without docstrings: the module-level code
    (classes included) and each top-level function."""
    try:
        tree = ast.parse(text, relpath)
    except SyntaxError as err:
        raise CodeHashError(f"cannot read {relpath}: {err}") from None
    strip_docstrings(tree)
    imports: list[list[Any]] = []
    refs: dict[str, set[str]] = {}
    functions = {s.name: digest_of(s) for s in tree.body if isinstance(s, FUNCTIONS)}
    defs = {s.name: "class" for s in tree.body if isinstance(s, ast.ClassDef)} | {
        name: "function" for name in functions
    }
    for stmt in tree.body:
        scope = stmt.name if isinstance(stmt, DEFS) else ""
        skipped = registered_handlers(stmt)
        found = refs.setdefault(scope, set())
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        imports.append([alias.name, None, alias.asname, scope])
            elif isinstance(node, ast.ImportFrom):
                module = absolute(name, is_init, node.module, node.level)
                if module.split(".")[0] == PACKAGE:
                    names = [[a.name, a.asname or a.name] for a in node.names]
                    imports.append([module, names, None, scope])
            elif id(node) not in skipped and (chain := dotted(node)):
                found.add(".".join(chain))
    top = [s for s in tree.body if not isinstance(s, FUNCTIONS)]
    return {
        "relpath": relpath,
        "imports": imports,
        "refs": {scope: ours(found, imports, defs) for scope, found in refs.items()},
        "defs": defs,
        "top": digest_of(ast.Module(body=top, type_ignores=[])),
        "functions": functions,
    }


def ours(refs: set[str], imports: list[list[Any]], defs: dict[str, str]) -> list[str]:
    """The references that may name package code: their first name is a definition here or
    bound by an import; a reference that only extends another (``a.b`` of ``a.b.c``) is
    dropped, the longer one reaches what it does."""
    names = set(defs)
    for module, imported, asname, _scope in imports:
        if imported is None:
            names.add(asname or module.split(".")[0])
        else:
            names.update(bound for _name, bound in imported)
    kept = sorted(r for r in refs if r.split(".")[0] in names)
    return [
        r for i, r in enumerate(kept) if not kept[i + 1 :] or not kept[i + 1].startswith(r + ".")
    ]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    tag = f"v{SUMMARY_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(base) / "joulebench" / "codehash" / tag


_SUMMARIES: dict[str, dict[str, Any]] = {}


def summary(name: str, path: Path, relpath: str) -> dict[str, Any]:
    """``summarize`` of one file, cached by its contents (in memory and on disk)."""
    data = path.read_bytes()
    key = hashlib.sha256(f"{name}\0{relpath}\0".encode() + data).hexdigest()
    if key in _SUMMARIES:
        return _SUMMARIES[key]
    cached = cache_dir() / f"{key}.json"
    try:
        found = json.loads(cached.read_text())
    except (OSError, ValueError):
        found = summarize(name, path.name == "__init__.py", data.decode(), relpath)
        try:  # a cache only: an unwritable home changes nothing but speed
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(found))
            os.replace(partial, cached)
        except OSError:
            pass
    _SUMMARIES[key] = found
    return found


class Package:
    """The modules and package directories under a package directory, read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # module name → path relative to root
        self.packages: set[str] = set()
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = Path(folder).relative_to(root)
            package = ".".join([PACKAGE, *rel.parts])
            self.packages.add(package)
            for file in files:
                if file.endswith(".py"):
                    stem = file.removesuffix(".py")
                    name = package if stem == "__init__" else f"{package}.{stem}"
                    self.files[name] = (rel / file).as_posix()
        self.summaries: dict[str, dict[str, Any] | None] = {}

    def source(self, name: str) -> dict[str, Any] | None:
        """The summary of module ``name`` (None: no file, e.g. a namespace package)."""
        if name not in self.summaries:
            relpath = self.files.get(name)
            found = summary(name, self.root / relpath, relpath) if relpath else None
            self.summaries[name] = found
        return self.summaries[name]


class Walk:
    """The modules, and the functions and classes in them, one step reaches."""

    def __init__(self, package: Package) -> None:
        self.root = package.root
        self.package = package
        self.loaded: dict[str, dict[str, Any] | None] = {}  # None: a namespace package
        self.entered: set[tuple[str, str]] = set()
        self.bound: dict[str, dict[str, Binding]] = {}

    def is_module(self, name: str) -> bool:
        return name in self.package.files or name in self.package.packages

    def load(self, name: str, importer: str = "") -> None:
        """Import module ``name``: the packages above it, then its module-level code."""
        parts = name.split(".")
        for i in range(1, len(parts)):
            self.load(".".join(parts[:i]), importer)
        if name in self.loaded:
            return
        src = self.package.source(name)
        if src is None and not self.is_module(name):
            where = f" (imported by {importer})" if importer else ""
            raise CodeHashError(f"module '{name}'{where} has no file under {self.root}")
        self.loaded[name] = src
        if src is not None:
            self.run_scope(name, "", enter=not in_dispatch(name))

    def enter(self, module: str, name: str) -> None:
        """Run function or class ``name`` of ``module``: what its imports and names reach."""
        if (module, name) in self.entered:
            return
        self.load(module)
        src = self.loaded[module]
        if src is None or name not in src["defs"]:
            raise CodeHashError(f"module '{module}' defines no function or class '{name}'")
        self.entered.add((module, name))
        self.run_scope(module, name, enter=True)

    def run_scope(self, module: str, scope: str, enter: bool) -> None:
        src = self.loaded[module]
        assert src is not None
        local: dict[str, Binding] = {}
        for imp in src["imports"]:
            if imp[3] == scope:
                self.bind(imp, local)
                self.load_import(imp, module)
        bound = {**self.bindings(module), **local}
        for ref in src["refs"].get(scope, ()):
            target = self.resolve(ref.split("."), bound)
            if target is None:
                continue
            owner, name = target
            if enter and name is not None:
                self.enter(owner, name)
            elif self.is_module(owner):
                self.load(owner, module)

    def load_import(self, imp: list[Any], importer: str) -> None:
        module, names = imp[0], imp[1]
        self.load(module, importer)
        for name, _bound in names or ():
            if self.is_module(f"{module}.{name}"):
                self.load(f"{module}.{name}", importer)

    def bind(self, imp: list[Any], out: dict[str, Binding]) -> None:
        module, names, asname = imp[0], imp[1], imp[2]
        if names is None:
            out[asname or PACKAGE] = (module if asname else PACKAGE, None)
            return
        for name, bound in names:
            sub = f"{module}.{name}"
            out[bound] = (sub, None) if self.is_module(sub) else (module, name)

    def bindings(self, module: str) -> dict[str, Binding]:
        """Module-level names of ``module``: its definitions and what its imports bind."""
        if module in self.bound:
            return self.bound[module]
        src = self.loaded[module]
        assert src is not None
        out: dict[str, Binding] = {name: (module, name) for name in src["defs"]}
        for imp in src["imports"]:
            if imp[3] == "":
                self.bind(imp, out)
        self.bound[module] = out
        return out

    def resolve(self, chain: list[str], bound: dict[str, Binding]) -> Binding | None:
        """The module and top-level name a dotted reference means (None: not ours)."""
        if chain[0] not in bound:
            return None
        module, name = bound[chain[0]]
        for attr in chain[1:]:
            if name is not None:
                break
            if self.is_module(f"{module}.{attr}"):
                module = f"{module}.{attr}"
            else:
                name = attr
        for _ in range(10):  # a name re-exported by an import (a package __init__)
            src = self.package.source(module)
            if name is None or src is None or name in src["defs"]:
                break
            self.load(module)
            again = self.bindings(module).get(name)
            if again is None:
                return (module, None)  # a constant: loading the module is all
            module, name = again
        if (
            name is not None
            and (self.package.source(module) or {}).get("defs", {}).get(name) is None
        ):
            return (module, None)
        return (module, name)

    def digest(self) -> str:
        """One hash over the code reached: each module's path and code digest, in path order."""
        parts = []
        for name, src in self.loaded.items():
            if src is None:
                continue
            used = sorted(f for m, f in self.entered if m == name)
            code = ",".join([src["top"], *(src["functions"].get(f, "") for f in used)])
            parts.append(f"{src['relpath']}\0{code}\0")
        return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()[:16]


def in_dispatch(name: str) -> bool:
    return name == DISPATCH or name.startswith(DISPATCH + ".")


def package_root() -> Path:
    """The directory of this ``joulebench`` package."""
    return Path(__file__).resolve().parents[1]


def step_walk(step: str, root: Path | Package | None = None) -> Walk:
    """Walk ``step``'s entry points (and what every step runs) in the package at ``root``."""
    if step not in STEPS:
        raise CodeHashError(f"no workflow step '{step}'; allowed: {', '.join(sorted(STEPS))}")
    walk = Walk(root if isinstance(root, Package) else Package(root or package_root()))
    for entry in (*COMMON, *STEPS[step]):
        module, _, function = entry.partition(":")
        if function:
            walk.enter(module, function)
            continue
        walk.load(module)
        for name in (walk.loaded[module] or {}).get("defs", {}):
            walk.enter(module, name)
    return walk


def step_modules(step: str, root: Path | None = None) -> list[str]:
    """The files (relative to the package) whose code counts in ``step``'s hash."""
    return sorted(src["relpath"] for src in step_walk(step, root).loaded.values() if src)


def source_hash(step: str, root: Path | Package | None = None) -> str:
    """A short hash of the code workflow ``step`` runs: rules pass it as a param, so an edit to
    that code reruns the step's jobs and an edit elsewhere (or to a comment) reruns nothing."""
    return step_walk(step, root).digest()


def source_hashes(root: Path | None = None) -> dict[str, str]:
    """``source_hash`` of every step."""
    package = Package(root or package_root())
    return {step: source_hash(step, package) for step in STEPS}
