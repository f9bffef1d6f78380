"""The harness: minimum-window repetition, idle baseline, the prefill/decode split by both
methods, and the conservation check — on a fake clock with a known answer."""

from __future__ import annotations

import math
from typing import Any

import pytest
from joulebench.energy.base import Measurement
from joulebench.energy.trace import PowerTrace, frame
from joulebench.harness import accounting, phases
from joulebench.study.specs import BenchSpec


class ClockMeter:
    """A fake meter on a fake clock: the engine says how long it runs and at what power.

    It keeps an exact counter and an interval power trace of the same timeline, so every
    number the harness derives has a known answer.
    """

    source = "fake"

    def __init__(self) -> None:
        self.now = 0.0
        self.joules = 0.0
        self.open: dict[str, tuple[float, float]] = {}
        self.rows: list[dict[str, Any]] = [self._sample(None)]

    def _sample(self, power: float | None) -> dict[str, Any]:
        return {"t_s": self.now, "device": "dev", "power_w": power, "interpolation": "interval"}

    def advance(self, seconds: float, watts: float) -> None:
        self.now += seconds
        self.joules += seconds * watts
        self.rows.append(self._sample(watts))

    def begin_window(self, key: str) -> None:
        self.open[key] = (self.now, self.joules)

    def end_window(self, key: str) -> Measurement:
        t0, j0 = self.open.pop(key)
        return Measurement(
            self.now - t0, {"dev": self.joules - j0}, self.source, {"dev": "fake"}, t0, self.now
        )

    def cancel_window(self, key: str) -> None:
        del self.open[key]

    def trace(self) -> PowerTrace:
        return PowerTrace(frame(self.rows))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source}

    def close(self) -> None: ...


class FakeEngine:
    """Prefill: 0.1 s at 300 W; each further token: 0.01 s at 100 W; then 0.05 s of teardown at
    200 W after every generate call (so the two phase methods disagree by a known amount)."""

    name = "fake"
    device = "cpu"

    def __init__(self, meter: ClockMeter) -> None:
        self.meter = meter
        self.calls: list[int] = []

    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> Any:
        return batch_size

    def generate(self, inputs: Any, new_tokens: int, on_first_token: Any = None) -> list[int]:
        self.calls.append(new_tokens)
        self.meter.advance(0.1, 300.0)
        if on_first_token:
            on_first_token()
        self.meter.advance(0.01 * (new_tokens - 1), 100.0)
        self.meter.advance(0.05, 200.0)
        return [new_tokens] * inputs  # as the engines do: real new tokens per prompt


def spec(**m: Any) -> BenchSpec:
    measurement = {
        "warmup_runs": 1,
        "repetitions": 3,
        "min_window_s": 0.0,
        "cooldown_s": 0.0,
        "seed": 0,
        "idle_s": 2.0,
        "meter": "fake",
    } | m
    return BenchSpec("s", "m", "fake", "fp32", "cpu", 4, 16, 11, measurement)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ClockMeter:
    meter = ClockMeter()
    monkeypatch.setattr(phases.time, "perf_counter", lambda: meter.now)
    monkeypatch.setattr(phases.time, "sleep", lambda s: meter.advance(s, 50.0))  # idle: 50 W
    return meter


def test_measure_repeats_short_windows(clock: ClockMeter) -> None:
    calls = []

    def work() -> None:
        calls.append(1)
        clock.advance(0.3, 100.0)

    w = phases.measure(clock, "k", work, min_window_s=1.0)
    assert w.repeats == 4 == len(calls)  # 0.3 s × 4 ≥ 1 s
    assert w.time_s == pytest.approx(0.3)
    assert w.total_j == pytest.approx(30.0)
    assert len(w.calls) == 4 and w.calls[-1][2] == pytest.approx(1.2)


def test_long_window_is_measured_once(clock: ClockMeter) -> None:
    w = phases.measure(clock, "k", lambda: clock.advance(2.0, 10.0), 1.0)
    assert w.repeats == 1


def test_idle_seconds_default_depends_on_the_meter() -> None:
    assert phases.idle_seconds({"idle_s": None}, "estimate") == 0.5
    assert phases.idle_seconds({"idle_s": None}, "nvml") == 5.0
    assert phases.idle_seconds({"idle_s": None}, "nvml+rapl") == 5.0
    assert phases.idle_seconds({"idle_s": 0}, "nvml") == 0.0


def test_phases_by_subtraction_and_direct_with_known_answers(clock: ClockMeter) -> None:
    engine = FakeEngine(clock)
    run = phases.run_phases(engine, clock, spec(), progress=False)  # type: ignore[arg-type]
    rows = accounting.account_energy(run, clock.trace())
    assert engine.calls[0] == 11  # warmup is a full generation
    assert run.idle is not None and run.idle.total_j == pytest.approx(100.0)  # 2 s × 50 W
    assert len(rows) == 3 * 3
    by = {(r["rep"], r["phase"]): r for r in rows}
    for rep in range(3):
        prefill, full, decode = (by[(rep, p)] for p in ("prefill", "full", "decode"))
        # subtraction: prefill window = 0.1 s × 300 W + 0.05 s × 200 W teardown
        assert prefill["time_s"] == pytest.approx(0.15)
        assert prefill["energy_j"] == pytest.approx(40.0)
        assert full["energy_j"] == pytest.approx(30.0 + 10.0 + 10.0)
        assert decode["time_s"] == pytest.approx(0.1)
        assert decode["energy_j"] == pytest.approx(full["energy_j"] - prefill["energy_j"])
        assert decode["method"] == "full-minus-prefill"
        assert prefill["tokens"] == 4 * 16  # prefill is per input token
        assert decode["tokens"] == 4 * 10  # decode: the output tokens after the first
        assert full["tokens"] == 4 * 11
        # direct: the trace over [start, first token] and [first token, end] of full calls
        assert prefill["direct_energy_j"] == pytest.approx(30.0)
        assert prefill["direct_time_s"] == pytest.approx(0.1)
        assert decode["direct_energy_j"] == pytest.approx(20.0)  # decode tokens + teardown
        assert prefill["direct_vs_subtraction_pct"] == pytest.approx(-25.0)
        assert decode["direct_vs_subtraction_pct"] == pytest.approx(100.0)
        assert full["direct_energy_j"] == pytest.approx(50.0)
        # net = gross − idle power × duration
        assert prefill["idle_power_w"] == pytest.approx(50.0)
        assert prefill["net_energy_j"] == pytest.approx(40.0 - 50.0 * 0.15)
        assert decode["net_energy_j"] == pytest.approx(10.0 - 50.0 * 0.1)
        # the trace and the counter saw the same energy
        for r in (prefill, full):
            assert r["trace_energy_j"] == pytest.approx(r["energy_j"])
            assert r["conservation_pct"] == pytest.approx(0.0, abs=1e-9)
        assert decode["conservation_pct"] is None
        assert len(full["calls"]) == 1 and not math.isnan(full["calls"][0][1])
    labels = [t["label"] for t in run.timeline]
    assert labels[:2] == ["idle", "warmup"] and labels.count("full window") == 3


def test_short_windows_are_repeated_to_the_minimum_in_the_harness(clock: ClockMeter) -> None:
    run = phases.run_phases(FakeEngine(clock), clock, spec(min_window_s=0.99), progress=False)  # type: ignore[arg-type]
    rows = accounting.account_energy(run, clock.trace())
    prefill = next(r for r in rows if r["phase"] == "prefill")
    full = next(r for r in rows if r["phase"] == "full")
    assert prefill["window_repeats"] == 7  # 0.15 s per call: 7 calls reach 0.99 s
    assert full["window_repeats"] == 4  # 0.25 s per call
    assert prefill["energy_j"] == pytest.approx(40.0)  # divided per call
    assert full["direct_energy_j"] == pytest.approx(50.0)
    assert full["end_s"] - full["start_s"] == pytest.approx(1.0)


def test_no_trace_means_no_direct_figures(clock: ClockMeter) -> None:
    run = phases.run_phases(FakeEngine(clock), clock, spec(idle_s=0), progress=False)  # type: ignore[arg-type]
    rows = accounting.account_energy(run, PowerTrace.empty())
    assert run.idle is None
    assert all(r["direct_energy_j"] is None and r["net_energy_j"] is None for r in rows)
    assert all(r["conservation_pct"] is None for r in rows)


def test_energy_taken_from_the_trace_is_not_checked_against_itself(clock: ClockMeter) -> None:
    run = phases.run_phases(FakeEngine(clock), clock, spec(idle_s=0), progress=False)  # type: ignore[arg-type]
    for row in run.rows:
        if "_window" in row:
            w = row["_window"]
            row["_window"] = phases.Window(
                w.time_s, w.energy_j, w.repeats, {"dev": "nvml-trace"}, w.start_s, w.end_s, w.calls
            )
    rows = accounting.account_energy(run, clock.trace())
    assert all(r["conservation_pct"] is None for r in rows)
    assert all(r["direct_energy_j"] is not None for r in rows)  # direct phases still work
