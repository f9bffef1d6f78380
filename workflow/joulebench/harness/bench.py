"""The benchmark harness: one configuration → one record of prefill, full and decode windows.

Method (the seed study's, made explicit): prefill = generate(max_new_tokens=1); full =
generate(max_new_tokens=output_len) with early stopping disabled; decode = full − prefill,
for energy and time alike. Both raw windows are kept in the record beside the derived one.
The windows are measured in :mod:`~joulebench.harness.phases`; net energy, the conservation
check and the direct phase split (the power trace over [start, first token] and [first token,
end]) are worked out in :mod:`~joulebench.harness.accounting`. This module runs the two for one
configuration (engine, meter, memory check) and assembles the record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from joulebench.core.errors import UnsupportedError
from joulebench.core.hostcpu import host_cpu
from joulebench.energy.meters import make_meter
from joulebench.energy.trace import PowerTrace
from joulebench.harness.accounting import account_energy, energy_method
from joulebench.harness.engines import EngineOptions, make_engine
from joulebench.harness.memory import (
    InfeasibleError,
    available_bytes,
    check_fits,
    estimate_need,
    is_out_of_memory,
)
from joulebench.harness.phases import run_phases
from joulebench.models.precisions import Precision
from joulebench.models.prepared import source_info
from joulebench.models.variants import weight_bytes
from joulebench.provenance import record as provenance
from joulebench.study.specs import BenchSpec

log = logging.getLogger(__name__)

RECORD_SCHEMA = "joulebench.record/2"


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
    rows = account_energy(phases, trace)
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
        energy_method=energy_method(
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
