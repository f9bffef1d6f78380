"""The harness: minimum-window repetition and the prefill/decode split, with fakes."""

from __future__ import annotations

from typing import Any

import pytest
from joulebench import bench
from joulebench.config import BenchSpec
from joulebench.meters import Measurement


class ClockMeter:
    """A fake meter: 1 s and 100 J per ``tick``; the engine ticks it."""

    source = "fake"

    def __init__(self) -> None:
        self.now = 0.0
        self.open: dict[str, float] = {}

    def begin_window(self, key: str) -> None:
        self.open[key] = self.now

    def end_window(self, key: str) -> Measurement:
        dt = self.now - self.open.pop(key)
        return Measurement(dt, {"dev": 100.0 * dt}, self.source)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source}

    def close(self) -> None: ...


class FakeEngine:
    """Prefill costs 0.1 s; every further token 0.01 s per sequence in the batch."""

    name = "fake"
    device = "cpu"

    def __init__(self, meter: ClockMeter) -> None:
        self.meter = meter
        self.calls: list[int] = []

    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> Any:
        return batch_size

    def generate(self, inputs: Any, new_tokens: int) -> None:
        self.calls.append(new_tokens)
        self.meter.now += 0.1 + 0.01 * (new_tokens - 1)


def spec(**m: Any) -> BenchSpec:
    measurement = {
        "warmup_runs": 1,
        "repetitions": 3,
        "min_window_s": 0.0,
        "cooldown_s": 0.0,
        "seed": 0,
    } | m
    return BenchSpec("s", "m", "fake", "fp32", "cpu", 4, 16, 11, measurement)


def test_measure_repeats_short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = ClockMeter()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: meter.now)
    calls = []

    def work() -> None:
        calls.append(1)
        meter.now += 0.3

    w = bench.measure(meter, "k", work, min_window_s=1.0)
    assert w.repeats == 4 == len(calls)  # 0.3 s × 4 ≥ 1 s
    assert w.time_s == pytest.approx(0.3)
    assert w.total_j == pytest.approx(30.0)


def test_long_window_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = ClockMeter()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: meter.now)
    w = bench.measure(meter, "k", lambda: setattr(meter, "now", meter.now + 2), 1.0)
    assert w.repeats == 1


def test_phases_decode_is_full_minus_prefill(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = ClockMeter()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: meter.now)
    engine = FakeEngine(meter)
    rows = bench.run_phases(engine, meter, spec(), progress=False)  # type: ignore[arg-type]
    assert engine.calls[0] == 11  # warmup is a full generation
    assert len(rows) == 3 * 3
    by = {(r["rep"], r["phase"]): r for r in rows}
    for rep in range(3):
        prefill, full, decode = (by[(rep, p)] for p in ("prefill", "full", "decode"))
        assert prefill["time_s"] == pytest.approx(0.1)
        assert full["time_s"] == pytest.approx(0.2)
        assert decode["time_s"] == pytest.approx(0.1)
        assert decode["energy_j"] == pytest.approx(full["energy_j"] - prefill["energy_j"])
        assert decode["method"] == "full-minus-prefill"
        assert prefill["tokens"] == 4 * 16  # prefill is per input token
        assert decode["tokens"] == 4 * 10  # decode: the output tokens after the first
        assert full["tokens"] == 4 * 11
