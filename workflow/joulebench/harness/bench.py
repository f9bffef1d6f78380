"""The benchmark harness: one configuration → one record of prefill, full and decode windows.

Method (the seed study's, made explicit): prefill = generate(max_new_tokens=1); full =
generate(max_new_tokens=output_len) with early stopping disabled; decode = full − prefill,
for energy and time alike. Both raw windows are kept in the record beside the derived one.

Beside that subtraction method, phases are measured directly: every full generation marks its
first token in time, and the power trace is integrated over [start, first token] (prefill) and
[first token, end] (decode). The record reports both and their disagreement, the idle power
measured before the job (gross and net energy side by side), and for every window the trace
integral against the meter's own figure (the conservation check).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from joulebench.core.errors import UnsupportedError
from joulebench.core.hostcpu import host_cpu
from joulebench.energy import Meter, PowerTrace, idle_baseline, make_meter
from joulebench.harness.engines import Engine, EngineOptions, make_engine
from joulebench.harness.memory import (
    InfeasibleError,
    available_bytes,
    check_fits,
    estimate_need,
    is_out_of_memory,
)
from joulebench.models.precisions import Precision
from joulebench.models.prepared import source_info
from joulebench.models.variants import weight_bytes
from joulebench.provenance import record as provenance
from joulebench.study.config import BenchSpec

log = logging.getLogger(__name__)

RECORD_SCHEMA = "joulebench.record/2"
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


def _pct(value: float | None, reference: float) -> float | None:
    if value is None or not math.isfinite(value) or not reference:
        return None
    return 100.0 * (value - reference) / reference


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def attribute(run: PhaseRun, trace: PowerTrace) -> list[dict[str, Any]]:
    """Finish the rows: net energy, trace integrals, conservation and direct phase energy.

    - net = gross − idle power × duration (idle over every device the idle window measured);
    - conservation_pct = 100 · (trace integral − meter figure) / meter figure, per window,
      over the devices that have both;
    - direct phases: the trace over [call start, first token] and [first token, call end] of
      every full generation, averaged per call; compared with the subtraction method.
    """
    idle_w = run.idle.total_j / run.idle.time_s if run.idle and run.idle.time_s > 0 else None
    traced = set(trace.devices)
    rows: list[dict[str, Any]] = []
    by_rep: dict[int, dict[str, dict[str, Any]]] = {}
    fulls: dict[int, Window] = {}
    for row in run.rows:
        row = dict(row)
        w: Window | None = row.pop("_window", None)
        row["idle_power_w"] = idle_w
        row["net_energy_j"] = row["energy_j"] - idle_w * row["time_s"] if idle_w else None
        row |= {
            "trace_energy_j": None,
            "conservation_pct": None,
            "direct_energy_j": None,
            "direct_time_s": None,
            "direct_vs_subtraction_pct": None,
            "start_s": None,
            "end_s": None,
            "calls": [],
        }
        if w is not None:
            row["start_s"], row["end_s"] = w.start_s - run.origin, w.end_s - run.origin
            row["calls"] = [[round(x - run.origin, 6) for x in c] for c in w.calls]
            # a device whose window energy already came from the trace cannot check itself
            both = sorted(
                d for d in set(w.energy_j) & traced if not w.sources.get(d, "").endswith("-trace")
            )
            if both:
                t_j = trace.total_energy([w.start_s], [w.end_s], both) / w.repeats
                row["trace_energy_j"] = _finite(t_j)
                row["conservation_pct"] = _pct(t_j, sum(w.energy_j[d] for d in both))
        by_rep.setdefault(row["rep"], {})[row["phase"]] = row
        rows.append(row)
        if w is not None and row["phase"] == "full":
            fulls[row["rep"]] = w
    for rep, w in fulls.items():
        _direct(by_rep[rep], w, trace, traced)
    return rows


def _direct(
    rep_rows: dict[str, dict[str, Any]], full: Window, trace: PowerTrace, traced: set[str]
) -> None:
    """Trace-attributed prefill and decode energy of one full window (needs every device)."""
    calls = [c for c in full.calls if math.isfinite(c[1])]
    if not calls or not set(full.energy_j) <= traced:
        return
    devices = sorted(full.energy_j)
    starts, firsts, ends = (list(x) for x in zip(*calls, strict=True))
    n = len(calls)
    pre_j = trace.total_energy(starts, firsts, devices) / n
    dec_j = trace.total_energy(firsts, ends, devices) / n
    pre_s = sum(f - s for s, f in zip(starts, firsts, strict=True)) / n
    dec_s = sum(e - f for f, e in zip(firsts, ends, strict=True)) / n
    for phase, j, s in (("prefill", pre_j, pre_s), ("decode", dec_j, dec_s)):
        row = rep_rows[phase]
        row["direct_energy_j"], row["direct_time_s"] = _finite(j), s
        row["direct_vs_subtraction_pct"] = _pct(j, row["energy_j"])
    rep_rows["full"]["direct_energy_j"] = _finite(pre_j + dec_j)
    rep_rows["full"]["direct_time_s"] = pre_s + dec_s


def run(
    spec: BenchSpec,
    model_dir: str,
    variant: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    trace_out: str | Path | None = None,
    skip_unsupported: bool = False,
) -> dict[str, Any]:
    """Run one configuration end to end and return its record (not yet written).

    ``threads`` is the CPU threads the scheduler gave the job; it is used when the spec leaves
    ``measurement.threads`` at 0 (“every core the job has”). A configuration that does not fit
    in memory returns an ``infeasible`` record with the reason instead of failing the study, as
    does, under ``skip_unsupported``, a variant that this job's engine, GPU or CPU cannot run
    (otherwise that is an :class:`UnsupportedError`). The power trace is written to
    ``trace_out`` (parquet, times relative to the start of the idle window) when given — empty
    for an infeasible configuration, so the file always exists.
    """
    m = spec.measurement
    started = provenance.now_utc()
    n_threads = m["threads"] or threads or 0
    log.info("%s on CPU %s", spec.config_id, host_cpu().summary())
    try:
        engine = make_engine(
            spec.engine,
            model_dir,
            spec.precision,
            spec.device,
            n_threads,
            variant=variant,
            options=engine_options(spec),
        )
        if m["memory_guard"]:
            _check_memory(spec, model_dir, engine.device, engine.precision)
        engine.load()
        meter = make_meter(
            m["meter"],
            engine.device,
            m["cpu_estimate"],
            engine.synchronize,
            sample_hz=m.get("sample_hz", 0.0),
            powercap_root=m.get("powercap_root"),
        )
        try:
            log.info("measuring %s with meter '%s'", spec.config_id, meter.source)
            engine.reset_peak_memory()
            clock_offset = time.time() - time.perf_counter()
            phases = run_phases(engine, meter, spec, progress)
            trace = meter.trace()
            meter_info = meter.describe()
        finally:
            meter.close()
    except Exception as err:
        unsupported = skip_unsupported and isinstance(err, UnsupportedError)
        if not (unsupported or isinstance(err, InfeasibleError) or is_out_of_memory(err)):
            raise
        log.warning("%s is infeasible: %s", spec.config_id, err)
        if trace_out is not None:
            PowerTrace.empty().save(trace_out)
        return _record(spec, model_dir, variant, started, "infeasible", reason=str(err))
    rows = attribute(phases, trace)
    trace = trace.shifted(phases.origin)
    if trace_out is not None:
        trace.save(trace_out)
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
        energy_method=_energy_method(
            meter_info, phases, rows, m, clock_offset, len(trace), trace_out
        ),
    )


def engine_options(spec: BenchSpec) -> EngineOptions:
    """What the engine sizes itself by: the batch, the longest sequence, the GPUs it holds."""
    return EngineOptions(
        batch_size=spec.batch_size,
        max_model_len=spec.input_len + spec.output_len,
        tensor_parallel_size=spec.tensor_parallel,
        seed=spec.measurement.get("seed", 0),
        vllm=spec.engine_options,
    )


def _energy_method(
    meter_info: dict[str, Any],
    phases: PhaseRun,
    rows: list[dict[str, Any]],
    m: dict[str, Any],
    clock_offset: float,
    trace_samples: int,
    trace_out: str | Path | None,
) -> dict[str, Any]:
    """How the energy of a record was measured: meter, fields, rate, idle, repeats, timeline."""
    idle = phases.idle
    return {
        "meter": meter_info["source"],
        "sources": meter_info.get("sources", {}),
        "power_fields": meter_info.get("power_fields", {}),
        "sample_hz": meter_info.get("sample_hz", 0),
        "idle": None
        if idle is None
        else {
            "duration_s": idle.time_s,
            "power_w": idle.total_j / idle.time_s,
            "power_w_by_device": {d: e / idle.time_s for d, e in idle.energy_j.items()},
        },
        "min_window_s": m["min_window_s"],
        "window_repeats": {
            p: [r["window_repeats"] for r in rows if r["phase"] == p] for p in ("prefill", "full")
        },
        "phase_methods": {
            "subtraction": "prefill = 1-token generate window; decode = full − prefill",
            "direct": "power trace integrated over [start, first token] and "
            "[first token, end] of every full generation",
        },
        "time_origin_unix": clock_offset + phases.origin,
        "timeline": [
            {**t, "start_s": t["start_s"] - phases.origin, "end_s": t["end_s"] - phases.origin}
            for t in phases.timeline
        ],
        "trace_file": Path(trace_out).name if trace_out is not None else None,
        "trace_samples": trace_samples,
    }


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
    energy_method: dict[str, Any] | None = None,
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
        "energy_method": energy_method,
        "memory": memory or {"bytes": None, "kind": None},
        "runs": runs or [],
        "started_at": started,
        "finished_at": provenance.now_utc(),
        "provenance": provenance.collect([meter] if meter else [])
        | {"model": source_info(Path(model_dir))},
    }
