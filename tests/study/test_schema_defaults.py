"""Defaults live in the schema: a dataclass that mirrors a schema object and gives a field a
default must give the schema's (issue #14, "one source for each name")."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

import pytest
from joulebench.serving.servers import ServerSpec
from joulebench.study import config, points
from joulebench.study.specs import BenchSpec
from joulebench.workload.arrivals import ArrivalSpec
from joulebench.workload.shaping import ShapingSpec

SCHEMA = config.load_schema()["properties"]
ARRIVAL = SCHEMA["serving"]["properties"]["arrivals"]["items"]


def disagreements(cls: type, schema: dict[str, Any]) -> list[str]:
    """Fields of ``cls`` whose default differs from the schema property of the same name."""
    out = []
    for f in fields(cls):
        prop = schema["properties"].get(f.name)
        if prop is None or "default" not in prop:
            continue
        if f.default is not MISSING:
            ours = f.default
        elif f.default_factory is not MISSING:
            ours = f.default_factory()
        else:
            out.append(
                f"{cls.__name__}.{f.name} has no default; the schema's is {prop['default']!r}"
            )
            continue
        if ours != prop["default"] or isinstance(ours, bool) != isinstance(prop["default"], bool):
            out.append(f"{cls.__name__}.{f.name} = {ours!r}; the schema says {prop['default']!r}")
    return out


@pytest.mark.parametrize(
    ("cls", "schema", "shared"),
    [
        (
            ServerSpec,
            SCHEMA["serving"]["properties"]["servers"]["items"],
            {"host", "port", "health_path", "startup_timeout_s", "stop_timeout_s", "env"},
        ),
        (ArrivalSpec, ARRIVAL, set()),
        (ShapingSpec, ARRIVAL["properties"]["shaping"], set()),
    ],
)
def test_dataclass_defaults_are_the_schemas(cls: type, schema: dict[str, Any], shared: set) -> None:
    assert not disagreements(cls, schema), disagreements(cls, schema)
    # the comparison covers the fields both give a default, so a renamed field cannot slip out
    both = {
        f.name
        for f in fields(cls)
        if "default" in schema["properties"].get(f.name, {})
        and (f.default is not MISSING or f.default_factory is not MISSING)
    }
    assert both == shared


def test_the_checker_sees_a_disagreement() -> None:
    schema = {"properties": {"host": {"type": "string", "default": "0.0.0.0"}}}
    assert disagreements(ServerSpec, schema) == [
        "ServerSpec.host = '127.0.0.1'; the schema says '0.0.0.0'"
    ]


def test_one_gpu_by_default_everywhere() -> None:
    """A job's GPUs default to the study's default tensor-parallel sizes, [1]."""
    assert SCHEMA["tensor_parallel_sizes"]["default"] == [1]
    (tp,) = SCHEMA["tensor_parallel_sizes"]["default"]
    assert {f.name: f.default for f in fields(BenchSpec)}["tensor_parallel"] == tp
    assert points.Point._field_defaults == {"tensor_parallel": tp}
    assert points.point_id.__defaults__ == (tp,)


def test_a_bench_spec_gets_the_schemas_measurement_and_vllm_defaults() -> None:
    """One job's spec given alone (`joulebench bench --spec-json`) is filled from the schema,
    not from the dataclass's empty defaults."""
    given = {
        "study": "s",
        "model": "m",
        "engine": "vllm",
        "precision": "bf16",
        "device": "cuda",
        "batch_size": 1,
        "input_len": 8,
        "output_len": 4,
    }
    spec = config.bench_spec(given, lambda key: key)
    assert spec.tensor_parallel == 1
    assert spec.measurement == config.with_defaults({}, SCHEMA["measurement"])
    assert spec.measurement["repetitions"] == 5 and spec.measurement["warmup_runs"] == 2
    assert spec.engine_options["gpu_memory_utilization"] == 0.9
    assert spec.engine_options == config.with_defaults({}, SCHEMA["vllm"])
