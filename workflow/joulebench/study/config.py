"""Study configuration: read a config file (or one job's spec, or one ``models:`` entry), check
it against the schema and the rules the schema cannot say, and fill in the schema's defaults.

This is the only place that turns ``config.yaml`` into a checked config; the Snakefile and the
CLI both call it, so a configuration value reaches the engine by one road. The checks beyond
the schema live in :mod:`~joulebench.study.checks`, the expansion into jobs in
:mod:`~joulebench.study.matrix`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from joulebench.core.errors import ConfigError
from joulebench.core.inputs import ArgumentError, keys_of
from joulebench.models.precisions import get_precision
from joulebench.study.checks import check_baseline, check_meter, check_model_source, check_semantics
from joulebench.study.matrix import check_tensor_parallel
from joulebench.study.specs import BenchSpec

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema (``workflow/schemas/config.schema.yaml``), the home of every default."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file; returns the config with every default filled in."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("configfile", f"'{path}' is a directory, not a config file")
    if not path.is_file():
        raise ConfigError("configfile", f"file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError("configfile", f"'{path}' is not valid YAML: {problem}{where}") from None
    return validate(data, base_dir=path.parent)


def validate(config: dict[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
    """Check ``config`` against the schema and the rules the schema cannot say; fill defaults."""
    if not isinstance(config, dict):
        raise ConfigError("<top>", f"the config must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0])
    given_baseline = set((config.get("analysis") or {}).get("baseline") or {})
    config = with_defaults(copy.deepcopy(config), schema)
    check_semantics(config, base_dir or Path.cwd())
    check_baseline(config, given_baseline)
    return config


def _key(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return ConfigError(
            _key([*path, extra[0]]), f"unknown key; allowed here: {', '.join(allowed)}"
        )
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return ConfigError(_key([*path, missing]), "is required but missing")
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return ConfigError(_key(path), f"value {err.instance!r} is not allowed; allowed: {allowed}")
    return ConfigError(_key(path), f"value {err.instance!r} is invalid: {err.message}")


def with_defaults(node: Any, schema: dict[str, Any]) -> Any:
    """Fill the schema's ``default`` values into ``node`` where a key is absent, recursively
    through objects and arrays. Mappings are filled in place and the node is returned, so
    ``with_defaults({}, schema["properties"]["measurement"])`` is a section's defaults."""
    if isinstance(node, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in node and "default" in sub:
                node[name] = copy.deepcopy(sub["default"])
            if name in node:
                node[name] = with_defaults(node[name], sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(item, schema["items"]) for item in node]
    return node


def _bench_schema() -> dict[str, Any]:
    """A benchmark spec's JSON schema, made of the study schema's own pieces."""
    props = load_schema()["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            f.name
            for f in fields(BenchSpec)
            if f.default is MISSING and f.default_factory is MISSING
        ],
        "properties": {
            "study": props["study"],
            "model": {"type": "string", "minLength": 1},
            "engine": props["engines"]["items"],
            "precision": {"type": "string"},
            "device": props["device"],
            "batch_size": props["batch_sizes"]["items"],
            "input_len": props["input_lengths"]["items"],
            "output_len": props["output_lengths"]["items"],
            "measurement": props["measurement"],
            "tensor_parallel": {
                **props["tensor_parallel_sizes"]["items"],
                "default": props["tensor_parallel_sizes"]["default"][0],
            },
            "engine_options": {"type": "object", "default": {}},
        },
    }


def bench_spec(data: Any, where: Callable[[str], str]) -> BenchSpec:
    """One benchmark's spec from a dict (``--spec-json`` or the command's flags), checked.

    Missing, unknown and out-of-range keys raise ArgumentError at ``where(key)`` (the flag or
    the JSON key the value came from); the measurement and vllm sections get their defaults.
    """

    def fail(err: ConfigError) -> ArgumentError:
        return ArgumentError(where(err.key), err.message)

    if not isinstance(data, dict):
        raise ArgumentError(where("<top>"), f"must be an object, got {type(data).__name__}")
    schema = _bench_schema()
    keys_of(data, where("<top>"), schema["required"], schema["properties"])
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        raise fail(_schema_error(errors[0]))
    data = with_defaults(copy.deepcopy(data), schema)
    if data["engine"] == "vllm":
        vllm = load_schema()["properties"]["vllm"]
        errors = list(jsonschema.Draft202012Validator(vllm).iter_errors(data["engine_options"]))
        if errors:
            raise fail(_schema_error(errors[0]))
        data["engine_options"] = with_defaults(data["engine_options"], vllm)
    try:
        get_precision(data["precision"], "precision")
        check_meter(data["measurement"]["meter"])
        check_tensor_parallel(data["engine"], data["device"], data["tensor_parallel"])
    except ConfigError as err:
        raise fail(err) from None
    return BenchSpec.from_dict(data)


def check_model_entry(entry: Any, key: str, base_dir: Path | None = None) -> dict[str, Any]:
    """One ``models:`` entry on its own (what `joulebench prepare-model` is given), defaults
    filled; errors name ``key`` (e.g. ``models[0]``) and the entry's key at fault."""
    schema = load_schema()["properties"]["models"]["items"]
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(entry),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        err = _schema_error(errors[0])
        sub = "" if err.key == "<top>" else err.key
        raise ConfigError(f"{key}.{sub}" if sub else key, err.message)
    entry = with_defaults(copy.deepcopy(entry), schema)
    check_model_source(entry, key, base_dir or Path.cwd())
    return entry


def config_section(section: str, given: dict[str, Any]) -> dict[str, Any]:
    """One top-level section of a config (``analysis``, ``quantization``) on its own, checked
    against the schema, with its defaults filled in; a bad value raises ConfigError whose key
    is the path inside the section (``<top>`` for the section itself)."""
    schema = load_schema()["properties"][section]
    error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(given)), None)
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "<top>"
        raise ConfigError(where, error.message)
    return with_defaults(copy.deepcopy(given), schema)
