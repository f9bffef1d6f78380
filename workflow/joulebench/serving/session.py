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
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from joulebench.core.atomic import write_json, write_with
from joulebench.core.errors import ConfigError, JoulebenchError
from joulebench.energy import HARDWARE_METERS, Measurement, Meter, PowerTrace, idle_baseline
from joulebench.energy.attribution import attribute, checks, decode_occupancy, steady_state
from joulebench.energy.meters import make_meter, resolve
from joulebench.provenance import record as provenance
from joulebench.serving import loadgen
from joulebench.serving.servers import OUTPUT_CONTROL, Server, ServerError, ServerSpec
from joulebench.workload import arrivals, shaping
from joulebench.workload.arrivals import ArrivalSpec
from joulebench.workload.prompts import Prompt, from_file, synthetic
from joulebench.workload.shaping import ShapingSpec

log = logging.getLogger(__name__)

RECORD_SCHEMA = "joulebench.serving.session/1"


@dataclass(frozen=True)
class Experiment:
    """One load phase: an arrival process (with its rate) and a shaping policy."""

    id: str
    pattern: str  # the arrival entry's name, e.g. "poisson" or "poisson-grouped"
    arrival: dict[str, Any]
    shaping: dict[str, Any] = field(default_factory=lambda: {"policy": "pass"})

    @property
    def arrival_spec(self) -> ArrivalSpec:
        return ArrivalSpec(**self.arrival)

    @property
    def shaping_spec(self) -> ShapingSpec:
        return ShapingSpec(**self.shaping)


@dataclass(frozen=True)
class SessionSpec:
    """Everything one serving job needs (passed as JSON through Snakemake ``params:``)."""

    study: str
    model: str
    precision: str
    device: str
    server: dict[str, Any]
    experiments: list[dict[str, Any]]
    load: dict[str, Any]
    measurement: dict[str, Any]

    @property
    def session_id(self) -> str:
        return f"{self.model}/{self.precision}/{self.server['name']}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionSpec:
        return cls(**data)


def experiment_id(name: str, arrival: dict[str, Any]) -> str:
    if arrival["process"] in arrivals.RATE_PROCESSES:
        return f"{name}_r{arrival['rate']:g}"
    if arrival["process"] == "closed":
        return f"{name}_u{arrival['users']}"
    return name


def expand_experiments(serving: dict[str, Any]) -> list[Experiment]:
    """``serving.arrivals`` × their rates → experiments (already validated)."""
    out = []
    for entry in serving["arrivals"]:
        params = {
            k: entry[k]
            for k in ("process", "burstiness", "break_min", "break_max", "users", "trace")
            if k in entry
        }
        shape = entry.get("shaping") or {"policy": "pass"}
        if entry["process"] in arrivals.RATE_PROCESSES:
            for rate in entry.get("rates") or serving["rates"]:
                arrival = params | {"rate": float(rate)}
                out.append(
                    Experiment(experiment_id(entry["name"], arrival), entry["name"], arrival, shape)
                )
        else:
            out.append(
                Experiment(experiment_id(entry["name"], params), entry["name"], params, shape)
            )
    return out


# ---------------------------------------------------------------- building the load


def make_prompts(spec: SessionSpec, tokenizer: Any, n: int, seed: int) -> list[Prompt]:
    load = spec.load
    source = load["prompts"]
    if source["source"] == "file":
        return from_file(
            Path(source["path"]),
            tokenizer,
            n,
            load["output_len"],
            source.get("prompt_field", "prompt"),
            source.get("output_len_field", "output_len"),
        )
    return synthetic(tokenizer, n, load["input_len"], load["output_len"], seed)


def build_requests(
    exp: Experiment, spec: SessionSpec, tokenizer: Any, seed: int
) -> list[loadgen.Request]:
    """Prompts + arrival schedule + shaping → the requests of one experiment."""
    n = spec.load["requests"]
    arrival = exp.arrival_spec
    if arrival.process == "trace":
        trace = arrivals.read_trace(Path(arrival.trace or ""), n)
        in_lens = trace.get("input_len", np.full(n, spec.load["input_len"])).tolist()
        out_lens = trace.get("output_len", np.full(n, spec.load["output_len"])).tolist()
        prompts = synthetic(tokenizer, n, in_lens, out_lens, seed)
        offsets: np.ndarray | None = trace["timestamp"]
    else:
        prompts = make_prompts(spec, tokenizer, n, seed)
        offsets = arrivals.schedule(arrival, n, seed)
    release = None if offsets is None else shaping.release_times(offsets, exp.shaping_spec)
    return [
        loadgen.Request(
            i,
            p.text,
            p.input_len,
            p.output_len,
            math.nan if offsets is None else float(offsets[i]),
            math.nan if release is None else float(release[i]),
        )
        for i, p in enumerate(prompts)
    ]


# ---------------------------------------------------------------- summarising one experiment


def _q(values: pl.Series | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.quantile(arr, q)) if arr.size else math.nan


def latency_summary(table: pl.DataFrame) -> dict[str, float]:
    ok = table.filter(pl.col("status") == "ok")
    itl = np.concatenate(
        [np.diff(np.asarray(t, dtype=float)) for t in ok["token_times_s"].to_list()] or [[]]
    )
    out: dict[str, float] = {}
    for name, values in (
        ("ttft_s", ok["ttft_s"]),
        ("server_ttft_s", ok["server_ttft_s"]),
        ("e2e_s", ok["e2e_s"]),
        ("tpot_s", ok["tpot_s"]),
        ("hold_s", ok["hold_s"]),
        ("itl_s", itl),
    ):
        out[f"{name}_p50"] = _q(values, 0.5)
        out[f"{name}_p99"] = _q(values, 0.99)
    return out


def energy_summary(
    table: pl.DataFrame,
    trace: PowerTrace,
    window: Measurement,
    steady_batch: int | str,
    tolerance: float,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The three per-request energies side by side, and each request's share, raw and scaled.

    ``trace`` and ``window`` share one time origin (the load's start). The attribution's raw
    shares come from the trace; closure % and conservation % are taken before any scaling, then
    the shares are scaled by metered / trace energy so that they add up to the meter's figure.
    """
    ok = table["status"] == "ok"
    n_ok = int(ok.sum())
    window_j = window.total_j
    span = (window.start_s, window.end_s)
    devices = [d for d in window.energy_j if d in set(trace.devices)]
    starts, ends = table["sent_s"].to_numpy(), table["end_s"].to_numpy()
    parts = attribute(trace, starts, ends, span, devices)
    check = checks(trace, parts, span, window_j, devices)
    scale = check.scale
    per_request = parts.per_request_j * scale
    first = table["first_token_s"].to_numpy()
    occupancy = decode_occupancy(first, ends, span)
    batch = max(1, round(occupancy)) if steady_batch == "auto" else int(steady_batch)
    tokens_ok = int(table.filter(ok)["output_tokens"].sum())
    steady = steady_state(
        trace,
        np.where(ok.to_numpy(), first, np.nan),
        np.where(ok.to_numpy(), ends, np.nan),
        [np.asarray(t) for t in table.filter(ok)["token_times_s"].to_list()],
        batch,
        devices,
    )
    steady_j = steady.energy_j * scale  # read off the trace; scaled onto the meter as above
    mask = ok.to_numpy()
    summary = {
        "window": {
            "energy_j": window_j,
            "time_s": window.time_s,
            "completed_requests": n_ok,
            "j_per_request": window_j / n_ok if n_ok else math.nan,
            "output_tokens": tokens_ok,
            "j_per_token": window_j / tokens_ok if tokens_ok else math.nan,
        },
        "steady_state": {
            "batch": batch,
            "batch_rule": "auto: time-averaged requests in decode"
            if steady_batch == "auto"
            else "configured",
            "decode_occupancy": occupancy,
            "start_s": steady.start_s,
            "end_s": steady.end_s,
            "energy_raw_j": steady.energy_j,
            "energy_j": steady_j,
            "output_tokens": steady.output_tokens,
            "j_per_token": steady_j / steady.output_tokens if steady.output_tokens else math.nan,
        },
        "attribution": {
            "method": "power split equally among requests in flight [sent, end); none in "
            "flight = idle; raw from the trace, scaled by metered / trace energy",
            "devices": devices,
            "metered_j": window_j,
            "trace_j": check.trace_j,
            "requests_raw_j": float(parts.per_request_j.sum()),
            "idle_raw_j": parts.idle_j,
            "shares_raw_j": parts.shares_j,
            "closure_pct": check.closure_pct,
            "conservation_pct": check.conservation_pct,
            "tolerance_pct": 100.0 * tolerance,
            "ok": check.within(100.0 * tolerance),
            "scale": scale,
            "requests_scaled_j": float(per_request.sum()),
            "idle_scaled_j": parts.idle_j * scale,
            "idle_s": parts.idle_s,
            "j_per_request_raw": float(parts.per_request_j[mask].mean()) if n_ok else math.nan,
            "j_per_request_scaled": float(per_request[mask].mean()) if n_ok else math.nan,
        },
    }
    return summary, parts.per_request_j, per_request


def load_summary(table: pl.DataFrame, window_s: float, exp: Experiment) -> dict[str, Any]:
    sent = table["sent_s"].to_numpy()
    lag = table["send_lag_s"].to_numpy()
    status = table["status"].value_counts()
    counts = dict(zip(status["status"].to_list(), status["count"].to_list(), strict=True))
    span = float(np.nanmax(sent) - np.nanmin(sent)) if sent.size > 1 else math.nan
    arrived = table["arrival_s"].to_numpy()
    arrival_span = float(np.nanmax(arrived) - np.nanmin(arrived)) if arrived.size > 1 else 0.0
    return {
        "requests": table.height,
        **{s: int(counts.get(s, 0)) for s in loadgen.STATUSES},
        "offered_rate": exp.arrival.get("rate"),
        # the drawn schedule's own rate (a Poisson sample of N differs from the nominal rate)
        "scheduled_rate": (table.height - 1) / arrival_span if arrival_span > 0 else math.nan,
        "achieved_rate": (table.height - 1) / span if span and span > 0 else math.nan,
        "send_lag_s_p50": _q(lag, 0.5),
        "send_lag_s_p99": _q(lag, 0.99),
        "send_lag_s_max": float(np.nanmax(lag)) if lag.size else math.nan,
        "load_s": window_s,
        "errors": table.filter(pl.col("status") != "ok")["error"].unique().to_list()[:5],
    }


# ---------------------------------------------------------------- the session


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
    target_for = lambda: loadgen.Target(  # noqa: E731
        server.url, server_spec.wire_protocol, server.model_name, OUTPUT_CONTROL[server_spec.kind]
    )
    written: list[Path] = []
    with server:
        target = target_for()
        watchdog = watchdog_for(server, load["timeout_s"])
        if load["warmup_requests"]:
            warm = [
                loadgen.Request(i, p.text, p.input_len, p.output_len)
                for i, p in enumerate(make_prompts(spec, tokenizer, load["warmup_requests"], 99))
            ]
            log.info("warm-up: %d requests", len(warm))
            try:
                results, _ = loadgen.run(
                    target, warm, load["timeout_s"], users=min(4, len(warm)), watchdog=watchdog
                )
            except loadgen.LoadAborted as err:
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


def watchdog_for(server: Server, timeout_s: float) -> loadgen.Watchdog:
    """Watch the server's process and, after a request times out or fails, its health URL."""
    return loadgen.Watchdog(
        exited=server.exit_reason,
        health_url=server.health_url,
        probe_timeout_s=min(timeout_s, 10.0),
    )


def server_failure(
    server: Server, during: str, reason: str, results: list[loadgen.Result]
) -> ServerError:
    """The error a session fails with when its server dies or hangs: counts and log tail."""
    return ServerError(
        f"server '{server.spec.name}' failed during {during}: {reason}; requests: "
        f"{loadgen.describe_counts(results)}; nothing was written for it; {server.log_tail()}"
    )


def check_meter(spec: SessionSpec, key: str = "measurement.meter") -> list[str]:
    """The meters the session will use; an estimate for an ``external`` server is refused."""
    m = spec.measurement
    names = resolve(m["meter"], spec.device, m.get("powercap_root"))
    if spec.server["kind"] == "external" and not set(names) <= set(HARDWARE_METERS):
        raise ConfigError(key, external_meter_reason(spec.server["name"], m["meter"], names))
    return names


def external_meter_reason(server: str, asked: Any, names: list[str]) -> str:
    """Why the estimate cannot measure an ``external`` server (one line, for config errors)."""
    how = f"'auto' resolves to {names} here, which is" if asked == "auto" else f"{asked} asks for"
    return (
        f"server '{server}' is external (it may run on another host), but {how} the CPU "
        "estimate, which models this host's CPU time of a process it can see; measure it with "
        f"a hardware meter of this host ({', '.join(HARDWARE_METERS)}) or use a server kind "
        "that joulebench starts"
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
    target: loadgen.Target,
    watchdog: loadgen.Watchdog,
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
    except loadgen.LoadAborted as err:
        if windows:
            meter.cancel_window(key)
        raise server_failure(server, f"experiment {exp.id}", err.reason, err.results) from None
    window = meter.end_window(key)
    loadgen_cpu_s = time.process_time() - cpu0
    trace = meter.trace().between(window.start_s, window.end_s).shifted(t0)
    died = server.exit_reason()
    if died is not None:  # after the last answer, but the results cannot be trusted
        raise server_failure(server, f"experiment {exp.id}", died, results)
    table = loadgen.results_table(results)
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


def session_specs(config: dict[str, Any]) -> list[SessionSpec]:
    """One session per serving model × precision × server (empty without ``serving:``)."""
    serving = config.get("serving")
    if not serving:
        return []
    experiments = [asdict(e) for e in expand_experiments(serving)]
    models = serving.get("models") or [m["name"] for m in config["models"]]
    load = {
        k: copy.deepcopy(serving[k])
        for k in ("requests", "warmup_requests", "input_len", "output_len", "prompts", "timeout_s")
    } | {"seed": serving["seed"]}
    measurement = {
        "meter": config["measurement"]["meter"],
        "cpu_estimate": copy.deepcopy(config["measurement"]["cpu_estimate"]),
        "powercap_root": config["measurement"]["powercap_root"],
    } | {
        k: serving[k]
        for k in ("idle_s", "trace_interval_s", "steady_batch", "attribution_tolerance")
    }
    return [
        SessionSpec(
            study=config["study"],
            model=model,
            precision=precision,
            device=config["device"],
            server=ServerSpec.from_dict(server).to_dict(),
            experiments=experiments,
            load=load,
            measurement=measurement,
        )
        for model in models
        for precision in serving["precisions"]
        for server in serving["servers"]
    ]
