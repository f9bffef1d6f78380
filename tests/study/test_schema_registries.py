"""The config schema's enums and config/README.md's key table agree with their sources.

The schema (workflow/schemas/config.schema.yaml) copies several Python registries into enums,
and config/README.md documents the schema's keys in a table: each copy is compared here with
the one it copies, so a name added in one place and not the other fails a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from conftest import REPO
from joulebench.core.hostcpu import ISA_LEVELS
from joulebench.energy.choice import METERS
from joulebench.harness.engines import ENGINES
from joulebench.models.precisions import PRECISIONS, PREQUANTIZED_FORMATS
from joulebench.results.figures import FORMATS
from joulebench.serving.protocols import PROTOCOLS
from joulebench.serving.servers import DTYPES
from joulebench.study.serving_specs import KINDS
from joulebench.workload.arrivals import PROCESSES
from joulebench.workload.shaping import POLICIES

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
README = (REPO / "config" / "README.md").read_text()


def enums(node: Any, path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """(key path, enum) for every enum in the schema; ``[]`` marks an array's items."""
    if not isinstance(node, dict):
        return
    if "enum" in node:
        yield path, node["enum"]
    for name, child in (node.get("properties") or {}).items():
        yield from enums(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from enums(node["items"], f"{path}[]")
    for child in node.get("oneOf", []):
        yield from enums(child, path)


def devices() -> set[str]:
    """Every device some engine runs some precision on, and ``auto`` (decided in the job)."""
    found = {d for p in PRECISIONS.values() for on in p.engines.values() for d in on}
    return found | {"auto"}


#: Each schema enum and the registry it copies.
REGISTRIES: dict[str, Callable[[], set[str]]] = {
    "device": devices,
    "engines[]": lambda: set(ENGINES),
    "cpu.isa": lambda: {"auto", "unknown", *ISA_LEVELS},  # auto: this host; unknown: no check
    # the dtypes of the cast precisions (fp32, fp16, bf16) are the ones bitsandbytes computes in
    "quantization.bnb_compute_dtype": lambda: {
        p.dtype for p in PRECISIONS.values() if p.kind == "cast"
    },
    "models[].quantization": lambda: set(PREQUANTIZED_FORMATS),
    "figure_formats[]": lambda: {suffix.lstrip(".") for suffix in FORMATS},
    "serving.precisions[]": lambda: set(DTYPES),
    "serving.servers[].kind": lambda: set(KINDS),
    "serving.servers[].protocol": lambda: set(PROTOCOLS),
    "serving.arrivals[].process": lambda: set(PROCESSES),
    "serving.arrivals[].shaping.policy": lambda: set(POLICIES),
}
#: Enums no Python registry holds: the schema is their one source (the model sources are
#: checked against README's "Model sources" table below).
SCHEMA_OWNED = {"models[].source", "serving.prompts.source", "serving.steady_batch"}


def every_enum(node: Any) -> int:
    """How many ``enum`` keys the schema holds anywhere (a walk blind to JSON Schema)."""
    if isinstance(node, dict):
        return ("enum" in node) + sum(every_enum(v) for v in node.values())
    if isinstance(node, list):
        return sum(every_enum(v) for v in node)
    return 0


def test_every_enum_is_classified() -> None:
    paths = [path for path, _ in enums(SCHEMA)]
    # each enum is reached (none under a keyword the walk skips) and has a path of its own
    assert len(paths) == every_enum(SCHEMA) > 10
    assert len(paths) == len(set(paths)), "two enums share a path; the comparisons see one"
    assert set(paths) == set(REGISTRIES) | SCHEMA_OWNED


@pytest.mark.parametrize("path", sorted(REGISTRIES))
def test_schema_enum_matches_its_registry(path: str) -> None:
    schema = dict(enums(SCHEMA))[path]
    registry = REGISTRIES[path]()
    assert registry, f"{path}: the registry is empty, so the comparison would prove nothing"
    assert len(schema) == len(set(schema)), path
    assert set(schema) == registry


# -- config/README.md's tables -------------------------------------------------------------


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table in ``text``: (header cells, body rows of cells)."""
    found: list[tuple[list[str], list[list[str]]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            assert len(block) >= 2 and set("".join(block[1])) <= set("-: "), block[:2]
            found.append((block[0], block[2:]))
            block = []
    return found


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def row_keys(cell: str) -> list[str]:
    """The schema keys a key cell names: `a.b`, `c` (a sibling of `a.b`), `x[].y` ..."""
    keys: list[str] = []
    for token in ticked(cell):
        if keys and "." not in token and "[" not in token:
            token = keys[-1].rpartition(".")[0] + "." + token
        keys.append(token)
    return keys


KEY_ROWS = [
    (row_keys(row[0]), row) for header, rows in tables(README) if header[0] == "key" for row in rows
]
SOURCE_ROWS = next(rows for header, rows in tables(README) if header[0] == "`source`")


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(key path, schema) of every key: object properties, and ``[]`` for an array's items."""
    for name, child in (node.get("properties") or {}).items():
        key = f"{path}.{name}" if path else name
        yield key, child
        yield from schema_nodes(child, key)
        items = child.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield f"{key}[]", items
            yield from schema_nodes(items, f"{key}[]")


NODES = dict(schema_nodes(SCHEMA))


def test_the_key_tables_were_read() -> None:
    assert len(KEY_ROWS) > 40
    assert all(keys for keys, _ in KEY_ROWS), [row for keys, row in KEY_ROWS if not keys]


def test_every_documented_key_is_in_the_schema() -> None:
    documented = {key for keys, _ in KEY_ROWS for key in keys}
    assert documented - set(NODES) == set()


def test_every_top_level_key_is_documented() -> None:
    documented = {key.split(".")[0].removesuffix("[]") for keys, _ in KEY_ROWS for key in keys}
    assert set(SCHEMA["properties"]) - documented == set()


def words(rows: list[list[str]]) -> set[str]:
    """The words inside backticks anywhere in ``rows``."""
    return {w for row in rows for t in ticked(" ".join(row)) for w in re.findall(r"[\w-]+", t)}


def test_every_key_of_a_documented_section_is_documented() -> None:
    """Where the table goes into a section (``measurement.meter``, ...) or documents an object
    (``serving.prompts``), every key of it is in the table or named in its rows' text."""
    documented = {key for keys, _ in KEY_ROWS for key in keys}
    parents = {key.rpartition(".")[0] for key in documented if "." in key}
    objects = {key for key in documented if "properties" in NODES[key]}
    missing = []
    for parent in sorted(parents | objects):
        rows = [row for keys, row in KEY_ROWS if any(k.startswith(parent) for k in keys)]
        if parent == "models[]":
            rows += SOURCE_ROWS
        named = words(rows)
        for child in NODES[parent].get("properties", {}):
            key = f"{parent}.{child}"
            inside = any(d == key or d.startswith((key + ".", key + "[]")) for d in documented)
            if not inside and child not in named:
                missing.append(key)
    assert missing == []


def test_the_model_sources_table_lists_the_schema_sources() -> None:
    assert [ticked(row[0])[0] for row in SOURCE_ROWS] == NODES["models[]"]["properties"]["source"][
        "enum"
    ]


def row_of(path: str) -> list[str]:
    """The row documenting ``path``, or else the nearest documented key above it."""
    documented = {key: row for keys, row in KEY_ROWS for key in keys}
    key = path
    while key not in documented:
        assert "." in key or "[]" in key, f"no row documents {path}"
        key = key.removesuffix("[]") if key.endswith("[]") else key.rpartition(".")[0]
    return documented[key]


LISTS: dict[str, Callable[[], set[str]]] = {
    "precisions": lambda: set(PRECISIONS),
    "measurement.meter": lambda: set(METERS),
    **REGISTRIES,
}


@pytest.mark.parametrize("path", sorted(LISTS))
def test_a_row_names_every_allowed_value(path: str) -> None:
    """The row that documents a key names each value its registry allows."""
    allowed = LISTS[path]()
    assert allowed, f"{path}: nothing to look for"
    assert allowed - words([row_of(path)]) == set()


SCALAR = (str, int, float, bool, list)
#: Keys whose README default is prose (the schema's default is null or computed in code).
PROSE_DEFAULTS = {
    "gpu.name",
    "cache.dir",
    "models[]",
    "models[].quantization",
    "precisions",
    "batch_sizes",
    "input_lengths",
    "output_lengths",
    "measurement.idle_s",
    "vllm.max_num_batched_tokens",
    "analysis.baseline",
    "analysis.slo",
    "serving.models",
    "serving.servers[]",
    "serving.rates",
    "serving.arrivals[]",
    "serving.prompts",
}


def test_single_key_rows_give_the_schema_default() -> None:
    """README's default of a one-key row is the schema's default (or a listed prose default)."""
    wrong = []
    for keys, row in KEY_ROWS:
        if len(keys) != 1 or keys[0] in PROSE_DEFAULTS:
            continue
        schema = NODES[keys[0]]
        assert "default" in schema, f"{keys[0]}: no schema default; list it in PROSE_DEFAULTS"
        given = yaml.safe_load(row[1].replace("`", ""))
        if given != schema["default"]:
            wrong.append((keys[0], row[1], schema["default"]))
    assert wrong == []
