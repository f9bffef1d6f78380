"""Arrival processes and shaping: statistics of the schedules and exact release times."""

from __future__ import annotations

import numpy as np
import pytest
from joulebench.core.errors import ConfigError
from joulebench.workload.arrivals import ArrivalSpec, check, read_replay, schedule
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
