"""The serving: section: defaults, the experiment list, and clear errors before any job."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from joulebench.core.errors import ConfigError
from joulebench.study import config
from joulebench.study.serving_specs import session_specs

BASE: dict[str, Any] = {
    "models": [{"name": "m", "source": "synthetic", "architecture": "tiny-llama"}],
    "precisions": ["fp32"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
    "serving": {
        "servers": [{"name": "tf", "kind": "transformers"}],
        "rates": [1, 2.5],
        "arrivals": [
            {"name": "poisson", "process": "poisson"},
            {
                "name": "grouped",
                "process": "gamma",
                "burstiness": 0.5,
                "shaping": {"policy": "group", "every_ms": 200},
            },
            {"name": "users", "process": "closed", "users": 4},
            {"name": "paper", "process": "uniform", "break_min": 0.1, "break_max": 0.5},
        ],
    },
}


def with_serving(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    cfg["serving"] |= changes
    return cfg


def test_sessions_and_experiments() -> None:
    sessions = session_specs(config.validate(copy.deepcopy(BASE)))
    assert [s.session_id for s in sessions] == ["m/fp32/tf"]
    ids = [e["id"] for e in sessions[0].experiments]
    assert ids == ["poisson_r1", "poisson_r2.5", "grouped_r1", "grouped_r2.5", "users_u4", "paper"]
    assert sessions[0].measurement["meter"] == "auto"
    assert sessions[0].server["host"] == "127.0.0.1"


def test_no_serving_section_no_sessions() -> None:
    cfg = copy.deepcopy(BASE)
    del cfg["serving"]
    assert session_specs(config.validate(cfg)) == []


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"rates": [0]}, r"serving\.rates\[0\]", "invalid"),
        ({"rates": [-2]}, r"serving\.rates\[0\]", "invalid"),
        (
            {"arrivals": [{"name": "a", "process": "posson"}]},
            r"serving\.arrivals\[0\]\.process",
            "allowed: constant, poisson, gamma",
        ),
        (
            {
                "arrivals": [
                    {
                        "name": "a",
                        "process": "closed",
                        "users": 2,
                        "shaping": {"policy": "group", "max_waiting": 2},
                    }
                ]
            },
            r"serving\.arrivals\[0\]\.shaping",
            "open-loop",
        ),
        (
            {"arrivals": [{"name": "a", "process": "poisson", "users": 2}]},
            r"serving\.arrivals\[0\]\.users",
            "does not apply",
        ),
        (
            {"arrivals": [{"name": "a", "process": "poisson", "shaping": {"policy": "group"}}]},
            r"serving\.arrivals\[0\]\.shaping",
            "every_ms, max_waiting",
        ),
        (
            {"arrivals": [{"name": "a", "process": "uniform", "break_min": 2, "break_max": 1}]},
            r"serving\.arrivals\[0\]\.break_min",
            "break_min <= break_max",
        ),
        ({"models": ["nope"]}, r"serving\.models\[0\]", "no model named 'nope'"),
        ({"precisions": ["cpu-int8"]}, r"serving\.precisions\[0\]", "allowed: fp32, fp16, bf16"),
        (
            {"servers": [{"name": "t", "kind": "tgi"}]},
            r"serving\.servers\[0\]\.command",
            "template",
        ),
        ({"servers": [{"name": "t", "kind": "foo"}]}, r"serving\.servers\[0\]\.kind", "allowed"),
        (
            {"prompts": {"source": "file", "path": "missing.jsonl"}},
            r"serving\.prompts\.path",
            "does not exist",
        ),
        ({"output_len": 4096}, r"serving\.output_len", "exceed the context"),
        ({"input_len": 2048}, r"serving\.input_len", "leave no room for output"),
        ({"requests": 10, "steady_batch": 11}, r"serving\.steady_batch", "allowed: 1 to 10"),
    ],
)
def test_errors_name_key_value_and_allowed(changes: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        config.validate(with_serving(**changes))
    assert message in str(err.value)


def test_rate_processes_need_rates() -> None:
    cfg = with_serving(arrivals=[{"name": "a", "process": "constant"}])
    del cfg["serving"]["rates"]
    with pytest.raises(ConfigError, match=r"serving\.arrivals\[0\]\.rates"):
        config.validate(cfg)


def test_default_study_has_a_serving_experiment() -> None:
    from conftest import REPO

    cfg = config.load(REPO / "config" / "config.yaml")
    exps = session_specs(cfg)[0].experiments
    assert {e["arrival"]["process"] for e in exps} == {"poisson"}
    assert {e["shaping"]["policy"] for e in exps} == {"pass", "group"}
    assert len({e["arrival"]["rate"] for e in exps}) == 2
