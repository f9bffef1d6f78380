"""What a command-line argument names, read and checked: a bad one ends in one line.

Every reader raises :class:`ArgumentError` naming the argument (``--spec-json``, ``records``),
the value and what was wrong, before any output is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.core.errors import JoulebenchError

if TYPE_CHECKING:
    import polars as pl


class ArgumentError(JoulebenchError):
    """A command-line argument names something missing, malformed or incomplete."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


def json_text(text: str, argument: str) -> Any:
    """The JSON value of an argument's text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ArgumentError(
            argument, f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None


def json_object(text: str, argument: str) -> dict[str, Any]:
    """An argument that must hold a JSON object."""
    value = json_text(text, argument)
    if not isinstance(value, dict):
        raise ArgumentError(argument, f"must be a JSON object, got {type(value).__name__}")
    return value


def existing_file(path: str | Path, argument: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ArgumentError(argument, f"'{path}' is a directory, not a file")
    if not path.is_file():
        raise ArgumentError(argument, f"file '{path}' does not exist")
    return path


def json_file(path: str | Path, argument: str) -> dict[str, Any]:
    """A file that must hold one JSON object (a record, a manifest)."""
    path = existing_file(path, argument)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        why = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else err
        raise ArgumentError(argument, f"'{path}' is not a JSON file ({why})") from None
    if not isinstance(value, dict):
        raise ArgumentError(
            argument, f"'{path}' holds a JSON {type(value).__name__}, not an object"
        )
    return value


def record_file(path: str | Path, argument: str, kind: str, keys: Iterable[str]) -> dict[str, Any]:
    """A record (JSON) that must carry ``keys``: ``kind`` says which record was expected."""
    record = json_file(path, argument)
    missing = [k for k in keys if k not in record]
    if missing:
        raise ArgumentError(
            argument, f"'{path}' is not a {kind} record (no {', '.join(map(repr, missing))})"
        )
    return record


def parquet_file(path: str | Path, argument: str, columns: Iterable[str] = ()) -> pl.DataFrame:
    """A parquet table that must have ``columns``."""
    import polars as pl

    path = existing_file(path, argument)
    try:
        table = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArgumentError(argument, f"'{path}' is not a parquet table ({first})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArgumentError(argument, f"'{path}' lacks the columns {', '.join(missing)}")
    return table


def model_dir(path: str | Path, argument: str) -> Path:
    """A Hugging Face model directory (with config.json)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(argument, f"'{path}' is a file, not a model directory")
    if not path.is_dir():
        raise ArgumentError(argument, f"directory '{path}' does not exist")
    if not (path / "config.json").is_file():
        raise ArgumentError(argument, f"'{path}' has no config.json; it is not a model directory")
    return path


def keys_of(
    data: dict[str, Any], argument: str, required: Iterable[str], allowed: Iterable[str]
) -> None:
    """``data`` has every required key and no other than ``allowed``."""
    required, allowed = list(required), set(allowed)
    missing = [k for k in required if k not in data]
    if missing:
        raise ArgumentError(argument, f"missing {', '.join(map(repr, missing))}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ArgumentError(
            argument, f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
