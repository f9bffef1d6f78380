"""What one benchmark job is (BenchSpec, named by its model, variant, engine and point) and the
lookup of a model's ``models:`` entry."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.study.points import point_id


@dataclass(frozen=True)
class BenchSpec:
    """Everything one benchmark job needs; its hash identifies the measurement.

    ``tensor_parallel`` defaults to the schema's default size (tests/study/test_schema_defaults.py);
    ``measurement`` and ``engine_options`` are empty unless given; ``matrix.expand`` and
    ``config.bench_spec`` always give them, filled from the schema.
    """

    study: str
    model: str
    engine: str
    precision: str
    device: str
    batch_size: int
    input_len: int
    output_len: int
    measurement: dict[str, Any] = field(default_factory=dict)
    tensor_parallel: int = 1
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> str:
        """The shape part of the job's name (with the GPU count when tensor parallel)."""
        return point_id(self.batch_size, self.input_len, self.output_len, self.tensor_parallel)

    @property
    def config_id(self) -> str:
        """The job's name: ``model/precision/engine/point``."""
        return f"{self.model}/{self.precision}/{self.engine}/{self.point}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """``to_dict`` as JSON with sorted keys (the rules' params), without copying the spec:
        building a study's DAG calls it once per job."""
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchSpec:
        return cls(**data)


def model_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``models:`` entry called ``name``."""
    for model in config["models"]:
        if model["name"] == name:
            return model
    raise ConfigError("models", f"no model named '{name}'")
