"""Every exception class the package defines derives from JoulebenchError (issue #14).

The CLI turns a JoulebenchError into one clear line; any other exception reaches the user as a
traceback. So every error class defined in joulebench must derive from it, except the few
listed in NOT_FOR_USERS with the reason they never reach a user.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import joulebench
import pytest
from joulebench.core.errors import JoulebenchError

#: Exception classes defined in joulebench that are not errors for a user, and why.
NOT_FOR_USERS: dict[str, str] = {}


def package_modules() -> list[str]:
    """Every module of the package, from its files on disk (nothing listed by hand)."""
    root = Path(joulebench.__file__).resolve().parent
    names = []
    for path in root.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return sorted(names)


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Exception classes defined (not merely imported) in a joulebench module, by full name."""
    found: dict[str, type[BaseException]] = {}
    for name in package_modules():
        if name == "joulebench.__main__":
            continue  # running it starts the CLI; it defines no classes
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    return found


EXCEPTIONS = defined_exceptions()


def test_the_walk_finds_the_package_errors():
    """The walk sees modules in every stage package, and the errors known to live in them."""
    assert {m.split(".")[1] for m in package_modules() if m.count(".") >= 1} >= {
        "core",
        "models",
        "harness",
        "serving",
        "results",
    }
    for known in (
        "joulebench.core.errors.ConfigError",
        "joulebench.harness.memory.InfeasibleError",
        "joulebench.harness.engines.base.GenerationError",
        "joulebench.results.forecast.ForecastError",
    ):
        assert known in EXCEPTIONS, f"{known} not found: the module walk missed it"


def test_the_walk_sees_every_error_class_in_the_sources():
    """Independent of importing: every class in the sources whose base is named ``...Error`` or
    ``...Exception`` (at any depth, so one defined inside a function too) is in the walk."""
    root = Path(joulebench.__file__).resolve().parent
    in_sources = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                (getattr(base, "id", None) or getattr(base, "attr", "")).endswith(
                    ("Error", "Exception")
                )
                for base in node.bases
            ):
                in_sources.add(node.name)
    assert len(in_sources) >= 10, "the source scan found (almost) no error classes"
    walked = {cls.__name__ for cls in EXCEPTIONS.values()}
    assert in_sources - walked == set(), "error classes the module walk does not see"


@pytest.mark.parametrize("name", sorted(set(EXCEPTIONS) - set(NOT_FOR_USERS)))
def test_every_error_is_a_joulebench_error(name: str) -> None:
    cls = EXCEPTIONS[name]
    assert issubclass(cls, JoulebenchError), (
        f"{name} derives from {[b.__name__ for b in cls.__mro__[1:]]}, not JoulebenchError: the "
        "CLI would end in a traceback for it; derive it from JoulebenchError or list it in "
        "NOT_FOR_USERS with the reason"
    )


def test_every_exemption_names_a_class_that_exists():
    stale = set(NOT_FOR_USERS) - set(EXCEPTIONS)
    assert not stale, f"NOT_FOR_USERS lists classes that no longer exist: {sorted(stale)}"
