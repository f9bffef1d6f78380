"""The benchmark harness: one configuration → one record of prefill, full and decode windows.

Method (the seed study's, made explicit): prefill = generate(max_new_tokens=1); full =
generate(max_new_tokens=output_len) with early stopping disabled; decode = full − prefill,
for energy and time alike. Both raw windows are kept in the record beside the derived one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from joulebench import provenance
from joulebench.config import BenchSpec
from joulebench.engines import Engine, make_engine
from joulebench.memory import (
    InfeasibleError,
    available_bytes,
    check_fits,
    estimate_need,
    is_out_of_memory,
)
from joulebench.meters import Meter, make_meter
from joulebench.precisions import Precision, weight_bytes

log = logging.getLogger(__name__)

RECORD_SCHEMA = "joulebench.record/1"


@dataclass(frozen=True)
class Window:
    """One measured window, already divided by the number of calls it held."""

    time_s: float
    energy_j: dict[str, float]
    repeats: int

    @property
    def total_j(self) -> float:
        return float(sum(self.energy_j.values()))


def measure(meter: Meter, key: str, fn: Callable[[], None], min_window_s: float) -> Window:
    """Measure ``fn`` in one meter window, calling it until the window is ``min_window_s`` long.

    Energy counters update every 20–100 ms and sample power only part of the time, so a short
    window is repeated inside one longer window and the result divided per call.
    """
    meter.begin_window(key)
    start = time.perf_counter()
    calls = 0
    while True:
        fn()
        calls += 1
        if time.perf_counter() - start >= min_window_s:
            break
    m = meter.end_window(key)
    return Window(m.time_s / calls, {d: e / calls for d, e in m.energy_j.items()}, calls)


def _row(rep: int, phase: str, method: str, w: Window, inp: int, out: int, tokens: int) -> dict:
    return {
        "rep": rep,
        "phase": phase,
        "method": method,
        "time_s": w.time_s,
        "energy_j": w.total_j,
        "energy_by_device_j": w.energy_j,
        "window_repeats": w.repeats,
        "input_tokens": inp,
        "output_tokens": out,
        "tokens": tokens,
    }


def run_phases(engine: Engine, meter: Meter, spec: BenchSpec, progress: bool = True) -> list[dict]:
    """Warm up, then measure prefill and full generation ``repetitions`` times."""
    m = spec.measurement
    b, n_in, n_out = spec.batch_size, spec.input_len, spec.output_len
    inputs = engine.make_inputs(b, n_in, m["seed"])
    for _ in tqdm(range(m["warmup_runs"]), desc="warmup", disable=not progress):
        engine.generate(inputs, n_out)
    rows: list[dict] = []
    for rep in tqdm(range(m["repetitions"]), desc=spec.config_id, disable=not progress):
        prefill = measure(
            meter, f"prefill-{rep}", lambda: engine.generate(inputs, 1), m["min_window_s"]
        )
        full = measure(
            meter, f"full-{rep}", lambda: engine.generate(inputs, n_out), m["min_window_s"]
        )
        decode = Window(
            full.time_s - prefill.time_s,
            {d: full.energy_j[d] - prefill.energy_j.get(d, 0.0) for d in full.energy_j},
            0,
        )
        rows += [
            _row(rep, "prefill", "measured", prefill, b * n_in, b, b * n_in),
            _row(rep, "full", "measured", full, b * n_in, b * n_out, b * n_out),
            _row(rep, "decode", "full-minus-prefill", decode, 0, b * (n_out - 1), b * (n_out - 1)),
        ]
        if m["cooldown_s"] > 0:
            time.sleep(m["cooldown_s"])
    return rows


def run(
    spec: BenchSpec,
    model_dir: str,
    variant: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one configuration end to end and return its record (not yet written).

    ``threads`` is the CPU threads the scheduler gave the job; it is used when the spec leaves
    ``measurement.threads`` at 0 (“every core the job has”). A configuration that does not fit
    in memory returns an ``infeasible`` record with the reason instead of failing the study.
    """
    m = spec.measurement
    started = provenance.now_utc()
    n_threads = m["threads"] or threads or 0
    engine = make_engine(spec.engine, model_dir, spec.precision, spec.device, n_threads)
    try:
        if m["memory_guard"]:
            _check_memory(spec, model_dir, engine.device, engine.precision)
        engine.load()
        meter = make_meter(m["meter"], engine.device, m["cpu_estimate"], engine.synchronize)
        try:
            log.info("measuring %s with meter '%s'", spec.config_id, meter.source)
            engine.reset_peak_memory()
            rows = run_phases(engine, meter, spec, progress)
            meter_info = meter.describe()
        finally:
            meter.close()
    except Exception as err:
        if not (isinstance(err, InfeasibleError) or is_out_of_memory(err)):
            raise
        log.warning("%s is infeasible: %s", spec.config_id, err)
        return _record(spec, model_dir, variant, started, "infeasible", reason=str(err))
    return _record(
        spec,
        model_dir,
        variant,
        started,
        "ok",
        engine=engine.describe(),
        meter=meter_info,
        memory=engine.peak_memory(),
        runs=rows,
    )


def _check_memory(spec: BenchSpec, model_dir: str, device: str, precision: Precision) -> None:
    need = estimate_need(
        Path(model_dir),
        weight_bytes(Path(model_dir), precision)["weight_bytes"],
        2 if precision.dtype in ("bfloat16", "float16") else 4,
        spec.batch_size,
        spec.input_len,
        spec.output_len,
    )
    check_fits(need, available_bytes(device), device)


def _record(
    spec: BenchSpec,
    model_dir: str,
    variant: dict[str, Any] | None,
    started: str,
    status: str,
    reason: str | None = None,
    engine: dict[str, Any] | None = None,
    meter: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
    runs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A result record: the configuration, what happened, the numbers and their provenance."""
    return {
        "schema": RECORD_SCHEMA,
        "status": status,
        "reason": reason,
        "config_id": spec.config_id,
        "config_hash": provenance.config_hash(spec.to_dict()),
        "config": spec.to_dict(),
        "model_dir": model_dir,
        "variant": variant,
        "engine": engine or {"engine": spec.engine, "device": spec.device},
        "meter": meter or {"source": None},
        "memory": memory or {"bytes": None, "kind": None},
        "runs": runs or [],
        "started_at": started,
        "finished_at": provenance.now_utc(),
        "provenance": provenance.collect([meter] if meter else []),
    }
