"""Serving experiments: one server per (model, precision, server), several load phases on it.

A session starts the server, waits until it is healthy, warms it up, builds its meter with the
same builder as a benchmark (nvml, rapl, estimate or a list of them; the estimate follows the
server's process tree), measures an idle baseline, then runs each experiment (arrival process ×
rate × shaping) inside one meter window that covers exactly its load phase. The meter's own
trace is the power trace. Each experiment leaves a per-request parquet table, its power trace
(``<experiment>.trace.parquet``) and a record (JSON) with provenance; the server log lies beside
them. The server is stopped (its whole process group) even when an experiment fails.

An ``external`` server is measured only by a hardware meter of this host (NVML, RAPL); its
record says the server may run elsewhere, so the energy is this host's, not necessarily the
server's. The estimate models this host's CPU time and is refused for it.

A server that dies or stops answering fails the session: the load is stopped (a watchdog beside
it), every request is accounted as completed, failed or not sent, and the error carries those
counts and the end of the server's log. The failed experiment writes nothing.

An experiment's requests are planned by :mod:`~joulebench.serving.load_plan`; its record's
latency, energy and load figures are made by :mod:`~joulebench.serving.summaries`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from joulebench.core.atomic import write_json, write_with
from joulebench.core.errors import JoulebenchError
from joulebench.energy.base import Measurement, Meter, idle_baseline
from joulebench.energy.meters import make_meter
from joulebench.energy.trace import PowerTrace
from joulebench.provenance import record as provenance
from joulebench.serving import loadgen
from joulebench.serving.load_plan import build_requests, make_prompts
from joulebench.serving.protocols import Target
from joulebench.serving.request import Request, Result, describe_counts, results_table
from joulebench.serving.servers import OUTPUT_CONTROL, Server, ServerError
from joulebench.serving.summaries import energy_summary, latency_summary, load_summary
from joulebench.serving.watchdog import LoadAborted, Watchdog
from joulebench.study.serving_specs import Experiment, ServerSpec, SessionSpec, check_meter

log = logging.getLogger(__name__)

RECORD_SCHEMA = "joulebench.serving.session/1"


def run_session(
    spec: SessionSpec, model_dir: str, out_dir: Path, log_path: Path | None = None
) -> list[Path]:
    """Run every experiment of ``spec`` on one server; returns the record paths written."""
    from transformers import AutoTokenizer

    started = provenance.now_utc()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    server_spec = ServerSpec.from_dict(spec.server)
    m, load = spec.measurement, spec.load
    check_meter(spec)  # before the server starts
    server = Server(
        server_spec, model_dir, spec.precision, spec.device, log_path or out_dir / "server.log"
    )
    target_for = lambda: Target(  # noqa: E731
        server.url, server_spec.wire_protocol, server.model_name, OUTPUT_CONTROL[server_spec.kind]
    )
    written: list[Path] = []
    with server:
        target = target_for()
        watchdog = watchdog_for(server, load["timeout_s"])
        if load["warmup_requests"]:
            warm = [
                Request(i, p.text, p.input_len, p.output_len)
                for i, p in enumerate(make_prompts(spec, tokenizer, load["warmup_requests"], 99))
            ]
            log.info("warm-up: %d requests", len(warm))
            try:
                results, _ = loadgen.run(
                    target, warm, load["timeout_s"], users=min(4, len(warm)), watchdog=watchdog
                )
            except LoadAborted as err:
                raise server_failure(server, "the warm-up", err.reason, err.results) from None
            bad = [r for r in results if r.status != "ok"]
            if bad:
                raise JoulebenchError(
                    f"warm-up request failed: {bad[0].error}; {server.log_tail()}"
                )
        meter = session_meter(spec, server.pid)
        try:
            baseline = idle_baseline(meter, m["idle_s"], key="idle-baseline")
            idle = None if baseline is None else _idle_summary(baseline)
            for i, exp_dict in enumerate(spec.experiments):
                exp = Experiment(**exp_dict)
                log.info("[%d/%d] %s: %s", i + 1, len(spec.experiments), exp.id, exp.arrival)
                record, table, trace = _run_experiment(
                    spec, exp, server, target, watchdog, tokenizer, meter, idle
                )
                record |= {
                    "server": server.describe(),
                    "session_started_at": started,
                    "provenance": provenance.collect([meter.describe()]),
                }
                # ids may hold dots (`poisson_r0.5`): append suffixes, never replace one
                write_with(out_dir / f"{exp.id}.parquet", table.write_parquet)
                trace.save(out_dir / record["trace"]["file"])
                write_json(out_dir / f"{exp.id}.json", record)
                written.append(out_dir / f"{exp.id}.json")
                _log_line(exp, record)
        finally:
            meter.close()
    return written


def watchdog_for(server: Server, timeout_s: float) -> Watchdog:
    """Watch the server's process and, after a request times out or fails, its health URL."""
    return Watchdog(
        exited=server.exit_reason,
        health_url=server.health_url,
        probe_timeout_s=min(timeout_s, 10.0),
    )


def server_failure(server: Server, during: str, reason: str, results: list[Result]) -> ServerError:
    """The error a session fails with when its server dies or hangs: counts and log tail."""
    return ServerError(
        f"server '{server.spec.name}' failed during {during}: {reason}; requests: "
        f"{describe_counts(results)}; nothing was written for it; {server.log_tail()}"
    )


def session_meter(spec: SessionSpec, server_pid: int | None) -> Meter:
    """The session's meter: the benchmark's builder, its trace at ``trace_interval_s``."""
    m = spec.measurement
    return make_meter(
        m["meter"],
        spec.device,
        m["cpu_estimate"],
        sample_hz=1.0 / m["trace_interval_s"],
        powercap_root=m.get("powercap_root"),
        server_pid=server_pid,
    )


def _idle_summary(w: Measurement) -> dict[str, Any]:
    """Server up, nothing in flight: its power over the idle baseline."""
    log.info("idle baseline: %.2f W over %.1f s (%s)", w.avg_power_w, w.time_s, w.source)
    return {"time_s": w.time_s, "energy_j": w.total_j, "power_w": w.avg_power_w}


def _run_experiment(
    spec: SessionSpec,
    exp: Experiment,
    server: Server,
    target: Target,
    watchdog: Watchdog,
    tokenizer: Any,
    meter: Meter,
    idle: dict[str, Any] | None,
) -> tuple[dict[str, Any], pl.DataFrame, PowerTrace]:
    m, load = spec.measurement, spec.load
    seed = load["seed"]
    requests = build_requests(exp, spec, tokenizer, seed)
    key = f"load-{exp.id}"
    started = provenance.now_utc()
    cpu0 = time.process_time()
    windows: list[str] = []

    def begin(_t0: float) -> None:
        meter.begin_window(key)
        windows.append(key)

    try:
        results, t0 = loadgen.run(
            target,
            requests,
            load["timeout_s"],
            users=exp.arrival_spec.users if exp.arrival_spec.process == "closed" else None,
            on_start=begin,
            watchdog=watchdog,
        )
    except LoadAborted as err:
        if windows:
            meter.cancel_window(key)
        raise server_failure(server, f"experiment {exp.id}", err.reason, err.results) from None
    window = meter.end_window(key)
    loadgen_cpu_s = time.process_time() - cpu0
    trace = meter.trace().between(window.start_s, window.end_s).shifted(t0)
    died = server.exit_reason()
    if died is not None:  # after the last answer, but the results cannot be trusted
        raise server_failure(server, f"experiment {exp.id}", died, results)
    table = results_table(results)
    local = Measurement(
        window.time_s,
        window.energy_j,
        window.source,
        window.sources,
        window.start_s - t0,
        window.end_s - t0,
    )
    energy, raw, scaled = energy_summary(
        table, trace, local, m["steady_batch"], m["attribution_tolerance"]
    )
    table = table.with_columns(
        energy_attributed_raw_j=pl.Series(raw),
        energy_attributed_scaled_j=pl.Series(scaled),
        meter_source=pl.lit(window.source),
        experiment=pl.lit(exp.id),
    )
    if idle is not None:
        energy["idle_baseline"] = idle | {
            "window_dynamic_j": window.total_j - idle["power_w"] * window.time_s
        }
    config = spec.to_dict() | {"experiments": None, "experiment": asdict(exp)}
    meter_info = meter.describe()
    external = spec.server["kind"] == "external"
    record = {
        "schema": RECORD_SCHEMA,
        "status": "ok",
        "config_id": f"{spec.session_id}/{exp.id}",
        "config_hash": provenance.config_hash(config),
        "config": config,
        "experiment": asdict(exp) | {"shaping_label": exp.shaping_spec.label},
        "meter": meter_info,
        "meter_source": window.source,
        "measured": {
            "what": "this host's hardware (the external server may run elsewhere: its energy "
            "is in these figures only if it runs on this host)"
            if external
            else "the host running the server joulebench started",
            "server_may_run_elsewhere": external,
        },
        "window": {
            "time_s": window.time_s,
            "energy_j": window.total_j,
            "energy_by_device_j": window.energy_j,
            "sources": window.sources,
            # the edges on the meters' clock (CLOCK_MONOTONIC, shared by every process here)
            "clock": "time.perf_counter",
            "start_s": window.start_s,
            "end_s": window.end_s,
            "load_start_s": t0,
        },
        "energy": energy,
        "latency": latency_summary(table),
        "load": load_summary(table, window.time_s, exp) | {"loadgen_cpu_s": loadgen_cpu_s},
        "trace": {
            "file": f"{exp.id}.trace.parquet",
            "samples": len(trace),
            "interval_s": m["trace_interval_s"],
            "devices": trace.devices,
            "time_origin": "load start (window.load_start_s)",
            "power_fields": meter_info.get("power_fields", {}),
        },
        "started_at": started,
        "finished_at": provenance.now_utc(),
    }
    return record, table, trace


def _log_line(exp: Experiment, record: dict[str, Any]) -> None:
    e, lat, ld = record["energy"], record["latency"], record["load"]
    log.info(
        "%s: %d ok / %d; %.3g J/request (window), %.3g (attributed), steady %.3g J/token; "
        "e2e p50 %.2f s p99 %.2f s; send lag p99 %.2f ms [%s]",
        exp.id,
        ld["ok"],
        ld["requests"],
        e["window"]["j_per_request"],
        e["attribution"]["j_per_request_scaled"],
        e["steady_state"]["j_per_token"],
        lat["e2e_s_p50"],
        lat["e2e_s_p99"],
        ld["send_lag_s_p99"] * 1000,
        record["meter_source"],
    )
