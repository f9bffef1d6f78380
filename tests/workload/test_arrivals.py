"""Arrival processes and shaping: statistics of the schedules and exact release times; the one
table of processes and their parameters, and that the schema and config/README.md agree with it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import REPO
from joulebench.core.errors import ConfigError
from joulebench.workload.arrivals import (
    PARAMETERS,
    PROCESSES,
    RATE_PROCESSES,
    ArrivalSpec,
    check,
    checked_entry,
    read_replay,
    schedule,
)
from joulebench.workload.shaping import ShapingSpec, release_times


def _cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def test_poisson_gaps_and_counts_look_poisson() -> None:
    t = schedule(ArrivalSpec("poisson", rate=200.0), 20_000, seed=1)
    gaps = np.diff(t)
    assert t[0] == 0.0
    assert 1 / gaps.mean() == pytest.approx(200.0, rel=0.03)
    assert _cv(gaps) == pytest.approx(1.0, abs=0.03)
    counts = np.bincount((t / 0.1).astype(int))  # 100 ms windows: mean 20
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.1)


def test_gamma_burstiness_sets_the_gap_cv() -> None:
    for k in (0.25, 1.0, 4.0):
        gaps = np.diff(schedule(ArrivalSpec("gamma", rate=50.0, burstiness=k), 20_000, seed=2))
        assert 1 / gaps.mean() == pytest.approx(50.0, rel=0.05)
        assert _cv(gaps) == pytest.approx(1 / np.sqrt(k), rel=0.06)


def test_constant_and_uniform_spacing() -> None:
    assert np.allclose(np.diff(schedule(ArrivalSpec("constant", rate=4.0), 10, 0)), 0.25)
    gaps = np.diff(schedule(ArrivalSpec("uniform", break_min=0.5, break_max=1.5), 5000, 0))
    assert gaps.min() >= 0.5 and gaps.max() <= 1.5
    assert gaps.mean() == pytest.approx(1.0, rel=0.02)


def test_schedules_are_seeded() -> None:
    spec = ArrivalSpec("poisson", rate=3.0)
    assert np.array_equal(schedule(spec, 50, 7), schedule(spec, 50, 7))
    assert not np.array_equal(schedule(spec, 50, 7), schedule(spec, 50, 8))
    assert schedule(ArrivalSpec("closed", users=4), 10, 0) is None


def test_trace_replay(tmp_path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,input_len,output_len\n12.5,10,4\n10.0,20,8\n11.0,30,2\n")
    trace = read_replay(path, 3)
    assert trace["timestamp"].tolist() == [0.0, 1.0, 2.5]
    assert trace["input_len"].tolist() == [20, 30, 10]
    with pytest.raises(ConfigError, match="3 rows; 5 requests"):
        read_replay(path, 5)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (ArrivalSpec("poisson", rate=0.0), "arrival.rate"),
        (ArrivalSpec("poisson", rate=-1.0), "arrival.rate"),
        (ArrivalSpec("posson", rate=1.0), "arrival.process"),
        (ArrivalSpec("uniform", break_min=2.0, break_max=1.0), "arrival.break_min"),
        (ArrivalSpec("closed"), "arrival.users"),
        (ArrivalSpec("gamma", rate=1.0, burstiness=0.0), "arrival.burstiness"),
    ],
)
def test_bad_arrivals_name_the_key(spec: ArrivalSpec, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check(spec)


def test_pass_through_releases_on_arrival() -> None:
    t = np.array([0.0, 0.1, 0.35])
    assert np.array_equal(release_times(t, ShapingSpec()), t)


def test_group_every_period_releases_on_the_grid() -> None:
    t = np.array([0.0, 0.1, 0.35, 0.45, 1.2])
    r = release_times(t, ShapingSpec("group", every_ms=400))
    assert r.tolist() == pytest.approx([0.4, 0.4, 0.4, 0.8, 1.6])


def test_group_at_k_waiting_releases_with_the_kth() -> None:
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    r = release_times(t, ShapingSpec("group", max_waiting=2))
    assert r.tolist() == pytest.approx([0.1, 0.1, 0.3, 0.3, 0.4])  # last one flushed at the end


def test_group_whichever_comes_first() -> None:
    t = np.array([0.0, 0.01, 0.02, 0.5, 0.9])
    r = release_times(t, ShapingSpec("group", every_ms=1000, max_waiting=3))
    assert r.tolist() == pytest.approx([0.02, 0.02, 0.02, 1.0, 1.0])
    assert np.all(r >= t)


# ---------------------------------------------------------------- the table of processes

#: The schema of one ``serving.arrivals[]`` entry.
ENTRY = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())[
    "properties"
]["serving"]["properties"]["arrivals"]["items"]
#: Keys of an arrivals entry that are no process's parameter.
NOT_PARAMETERS = {"name", "process", "shaping"}
#: A valid value of every parameter, for building entries.
VALID = {
    "rates": [2.0],
    "burstiness": 0.5,
    "break_min": 0.1,
    "break_max": 0.2,
    "users": 3,
    "trace": "arrivals.csv",
}


def test_the_processes_and_their_parameters() -> None:
    """What configs in use rely on: which keys each process takes (a change here breaks them)."""
    assert {name: set(p.parameters) for name, p in PROCESSES.items()} == {
        "constant": {"rates"},
        "poisson": {"rates"},
        "gamma": {"rates", "burstiness"},
        "uniform": {"break_min", "break_max"},
        "closed": {"users"},
        "trace": {"trace"},
    }
    required = {
        n: {k for k, par in p.parameters.items() if par.required} for n, p in PROCESSES.items()
    }
    assert required == {
        "constant": {"rates"},  # a process's own rates, else serving.rates (checked_entry)
        "poisson": {"rates"},
        "gamma": {"rates"},
        "uniform": {"break_min", "break_max"},
        "closed": {"users"},
        "trace": {"trace"},
    }
    assert PROCESSES["gamma"].parameters["burstiness"].default == 1.0
    assert ArrivalSpec("gamma").burstiness == 1.0  # the spec's default is the table's
    assert RATE_PROCESSES == ("constant", "poisson", "gamma")
    assert [n for n, p in PROCESSES.items() if not p.open_loop] == ["closed"]
    for process in PROCESSES.values():
        assert process.meaning
        for param in process.parameters.values():
            assert param.meaning and (param.required or param.default is not None)


def test_schema_process_enum_is_the_table() -> None:
    assert ENTRY["properties"]["process"]["enum"] == list(PROCESSES)
    assert ENTRY["required"] == ["name", "process"]


def test_schema_parameter_keys_are_the_tables() -> None:
    assert set(ENTRY["properties"]) - NOT_PARAMETERS == set(PARAMETERS)
    assert set(VALID) == set(PARAMETERS)  # the values below cover every parameter


def test_config_readme_names_every_process_and_parameter() -> None:
    """In the row that documents ``serving.arrivals[]`` (not anywhere in the file: `trace` or
    `rates` appear elsewhere for other reasons)."""
    readme = (REPO / "config" / "README.md").read_text().splitlines()
    rows = [line for line in readme if line.startswith("| `serving.arrivals[]` |")]
    assert len(rows) == 1, "config/README.md has no single `serving.arrivals[]` row"
    (text,) = rows
    missing = [f"`{name}`" for name in [*PROCESSES, *PARAMETERS] if f"`{name}`" not in text]
    assert not missing, f"config/README.md does not mention {missing}"


@pytest.mark.parametrize("process", list(PROCESSES))
def test_an_entry_with_its_own_parameters_is_valid(process: str) -> None:
    own = PROCESSES[process].parameters
    entry = {"name": "a", "process": process} | {k: VALID[k] for k in own}
    assert checked_entry(entry, "arrivals[0]", None) == entry


@pytest.mark.parametrize(
    ("process", "other"),
    [(p, k) for p in PROCESSES for k in PARAMETERS if k not in PROCESSES[p].parameters],
)
def test_a_parameter_of_another_process_names_its_key(process: str, other: str) -> None:
    own = PROCESSES[process].parameters
    entry = {"name": "a", "process": process, other: VALID[other]} | {k: VALID[k] for k in own}
    with pytest.raises(ConfigError, match=rf"arrivals\[0\]\.{other}': does not apply") as err:
        checked_entry(entry, "arrivals[0]", [1.0])
    assert ", ".join(own) in str(err.value)  # and says which parameters the process takes


@pytest.mark.parametrize(
    ("process", "needed"),
    [(p, k) for p, proc in PROCESSES.items() for k, par in proc.parameters.items() if par.required],
)
def test_a_missing_required_parameter_names_its_key(process: str, needed: str) -> None:
    own = PROCESSES[process].parameters
    entry = {"name": "a", "process": process} | {k: VALID[k] for k in own if k != needed}
    with pytest.raises(ConfigError, match=rf"arrivals\[0\]\.{needed}': process '{process}' needs"):
        checked_entry(entry, "arrivals[0]", None)


def test_rates_default_to_the_serving_rates_and_optional_parameters_get_defaults() -> None:
    entry = checked_entry({"name": "g", "process": "gamma"}, "arrivals[0]", [1.0, 4.0])
    assert entry == {"name": "g", "process": "gamma", "burstiness": 1.0}
    with pytest.raises(ConfigError, match=r"arrivals\[0\]\.rate': must be > 0"):
        checked_entry({"name": "g", "process": "poisson"}, "arrivals[0]", [0.0])
