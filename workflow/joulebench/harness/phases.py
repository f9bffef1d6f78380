"""Measuring one configuration's phases: an idle baseline, warm-up, then per repetition a prefill
window (generate one token) and a full window (generate every token), each repeated inside one
meter window until it is long enough; decode = full − prefill, for energy and time alike.

Every full generation marks its first token in time, so the trace can split it directly later
(:mod:`~joulebench.harness.accounting`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from joulebench.energy.base import Meter, idle_baseline
from joulebench.harness.engines import Engine
from joulebench.study.config import BenchSpec

#: Idle baseline when ``measurement.idle_s`` is left unset: a hardware counter needs seconds to
#: settle on a figure; the CPU estimate is a formula and needs only enough CPU-time ticks.
DEFAULT_IDLE_S = {"counter": 5.0, "estimate": 0.5}

#: One call inside a window: (start, first token or NaN, end) on ``time.perf_counter``.
Call = tuple[float, float, float]


@dataclass(frozen=True)
class Window:
    """One measured window, already divided by the number of calls it held."""

    time_s: float
    energy_j: dict[str, float]
    repeats: int
    sources: dict[str, str] = field(default_factory=dict)
    start_s: float = math.nan
    end_s: float = math.nan
    calls: tuple[Call, ...] = ()

    @property
    def total_j(self) -> float:
        return float(sum(self.energy_j.values()))


def measure(meter: Meter, key: str, fn: Callable[[], float | None], min_window_s: float) -> Window:
    """Measure ``fn`` in one meter window, calling it until the window is ``min_window_s`` long.

    Energy counters update every 20–100 ms and sample power only part of the time, so a short
    window is repeated inside one longer window and the result divided per call. ``fn`` may
    return the time of its first token, which is kept with the call's start and end.
    """
    meter.begin_window(key)
    start = time.perf_counter()
    calls: list[Call] = []
    while True:
        c0 = time.perf_counter()
        first = fn()
        c1 = time.perf_counter()
        calls.append((c0, math.nan if first is None else first, c1))
        if c1 - start >= min_window_s:
            break
    m = meter.end_window(key)
    n = len(calls)
    return Window(
        m.time_s / n,
        {d: e / n for d, e in m.energy_j.items()},
        n,
        dict(m.sources),
        m.start_s if math.isfinite(m.start_s) else start,
        m.end_s if math.isfinite(m.end_s) else calls[-1][2],
        tuple(calls),
    )


def measure_idle(meter: Meter, seconds: float) -> Window | None:
    """Energy of ``seconds`` of doing nothing (model loaded, before any generation)."""
    m = idle_baseline(meter, seconds)
    if m is None:
        return None
    return Window(m.time_s, dict(m.energy_j), 1, dict(m.sources), m.start_s, m.end_s)


def idle_seconds(measurement: dict[str, Any], meter_source: str) -> float:
    """``measurement.idle_s``, or its default for this meter when unset."""
    if measurement.get("idle_s") is not None:
        return float(measurement["idle_s"])
    return DEFAULT_IDLE_S["estimate" if meter_source == "estimate" else "counter"]


@dataclass
class PhaseRun:
    """Everything ``run_phases`` measured: rows per repetition and phase, idle, timeline."""

    rows: list[dict[str, Any]]
    idle: Window | None
    timeline: list[dict[str, Any]]
    origin: float


def _row(rep: int, phase: str, method: str, w: Window, inp: int, out: int, tokens: int) -> dict:
    return {
        "rep": rep,
        "phase": phase,
        "method": method,
        "time_s": w.time_s,
        "energy_j": w.total_j,
        "energy_by_device_j": w.energy_j,
        "energy_sources": w.sources,
        "window_repeats": w.repeats,
        "input_tokens": inp,
        "output_tokens": out,
        "tokens": tokens,
    }


def run_phases(
    engine: Engine,
    meter: Meter,
    spec: BenchSpec,
    progress: bool = True,
    idle_s: float | None = None,
) -> PhaseRun:
    """Idle baseline, warm up, then measure prefill and full generation ``repetitions`` times."""
    m = spec.measurement
    b, n_in, n_out = spec.batch_size, spec.input_len, spec.output_len
    inputs = engine.make_inputs(b, n_in, m["seed"])
    origin = time.perf_counter()
    timeline: list[dict[str, Any]] = []
    idle = measure_idle(meter, idle_seconds(m, meter.source) if idle_s is None else idle_s)
    if idle is not None:
        timeline.append({"label": "idle", "start_s": idle.start_s, "end_s": idle.end_s})
    w0 = time.perf_counter()
    for _ in tqdm(range(m["warmup_runs"]), desc="warmup", disable=not progress):
        engine.generate(inputs, n_out)
    if m["warmup_runs"]:
        timeline.append({"label": "warmup", "start_s": w0, "end_s": time.perf_counter()})

    def full_call() -> float:
        marks: list[float] = []
        engine.generate(inputs, n_out, on_first_token=lambda: marks.append(time.perf_counter()))
        return marks[0] if marks else math.nan

    def prefill_call() -> None:
        engine.generate(inputs, 1)

    rows: list[dict] = []
    for rep in tqdm(range(m["repetitions"]), desc=spec.config_id, disable=not progress):
        prefill = measure(meter, f"prefill-{rep}", prefill_call, m["min_window_s"])
        full = measure(meter, f"full-{rep}", full_call, m["min_window_s"])
        decode = Window(
            full.time_s - prefill.time_s,
            {d: full.energy_j[d] - prefill.energy_j.get(d, 0.0) for d in full.energy_j},
            0,
            full.sources,
        )
        for label, w in (("prefill window", prefill), ("full window", full)):
            timeline.append({"label": label, "start_s": w.start_s, "end_s": w.end_s, "rep": rep})
        rows += [
            _row(rep, "prefill", "measured", prefill, b * n_in, b, b * n_in) | {"_window": prefill},
            _row(rep, "full", "measured", full, b * n_in, b * n_out, b * n_out) | {"_window": full},
            _row(rep, "decode", "full-minus-prefill", decode, 0, b * (n_out - 1), b * (n_out - 1)),
        ]
        if m["cooldown_s"] > 0:
            time.sleep(m["cooldown_s"])
    return PhaseRun(rows, idle, timeline, origin)
