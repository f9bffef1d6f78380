"""Aggregation: result records → one tidy table of measurements → a summary with 95% CIs.

Every table and figure downstream is a query over the tidy table; nothing loops over rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from joulebench.core.errors import JoulebenchError
from joulebench.results.stats import t_quantile


class AggregationError(JoulebenchError):
    """There is nothing to aggregate (e.g. every configuration of the study was infeasible)."""


#: Columns that identify a configuration (a group in the summary).
CONFIG_COLUMNS = [
    "study",
    "model",
    "engine",
    "precision",
    "device",
    "batch_size",
    "input_len",
    "output_len",
    "config_id",
    "config_hash",
    "meter_source",
]
#: Columns that say which environment produced a result, kept so results can be grouped by it.
ENV_COLUMNS = ["host", "gpu_name", "joulebench_version", "git_commit", "torch_version"]
#: Metrics summarised over repetitions.
METRICS = [
    "energy_j",
    "time_s",
    "j_per_token",
    "tokens_per_s",
    "avg_power_w",
    "j_per_request",
    # idle baseline: net = gross − idle power × duration
    "idle_power_w",
    "net_energy_j",
    "net_j_per_token",
    # phases measured directly from the power trace, and their gap to the subtraction method
    "direct_energy_j",
    "direct_time_s",
    "direct_j_per_token",
    "direct_vs_subtraction_pct",
    # conservation: trace integral vs the meter's own figure over the same window
    "conservation_pct",
]
#: Per-run measurement quantities of a record (null where a run has none, e.g. no trace).
TRACE_QUANTITIES = (
    "idle_power_w",
    "net_energy_j",
    "trace_energy_j",
    "conservation_pct",
    "direct_energy_j",
    "direct_time_s",
    "direct_vs_subtraction_pct",
)
#: How the energy was measured, per record (kept in the summary beside the meter source).
METHOD_COLUMNS = ["power_field", "sample_hz"]
#: What the variant and the job's GPUs were: tensor-parallel size, bits, bytes in memory, on disk.
VARIANT_COLUMNS = ["tensor_parallel", "weight_bits", "weight_bytes", "checkpoint_bytes"]
PHASES = ["prefill", "decode", "full"]


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def _gpu_name(record: dict[str, Any]) -> str | None:
    gpus = record["provenance"].get("torch", {}).get("gpus")
    return gpus[0] if gpus else None


#: Fields of a record's runs that the tidy table keeps.
RUN_FIELDS = (
    "rep",
    "phase",
    "method",
    "time_s",
    "energy_j",
    "tokens",
    "input_tokens",
    "output_tokens",
    "window_repeats",
)


def _config_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The configuration and environment columns of one record."""
    cfg, prov = rec["config"], rec["provenance"]
    return {
        k: cfg[k]
        for k in ("study", "model", "engine", "precision", "batch_size", "input_len", "output_len")
    } | {
        "device": rec["engine"]["device"],
        "config_id": rec["config_id"],
        "config_hash": rec["config_hash"],
        "meter_source": rec["meter"]["source"],
        "peak_memory_bytes": rec["memory"]["bytes"],
        "host": prov["host"]["hostname"],
        "gpu_name": _gpu_name(rec),
        "joulebench_version": prov["joulebench_version"],
        "git_commit": prov["git"]["commit"],
        "torch_version": prov["packages"].get("torch"),
        **_method(rec),
        **_variant(rec),
    }


def _variant(record: dict[str, Any]) -> dict[str, Any]:
    """Tensor-parallel size and the variant's sizes (records before variants lack some)."""
    variant = record.get("variant") or {}
    sizes = variant.get("sizes") or {}
    return {
        "tensor_parallel": record["config"].get("tensor_parallel", 1),
        "weight_bits": (variant.get("precision") or {}).get("weight_bits"),
        "weight_bytes": sizes.get("weight_bytes"),
        "checkpoint_bytes": sizes.get("checkpoint_bytes"),
    }


def _method(record: dict[str, Any]) -> dict[str, Any]:
    """Power field(s) and trace rate of a record (records before traces have neither)."""
    info = record.get("energy_method") or {}
    fields = sorted(set((info.get("power_fields") or {}).values()))
    return {"power_field": ", ".join(fields) or None, "sample_hz": info.get("sample_hz")}


def measurements(records: list[dict[str, Any]]) -> pl.DataFrame:
    """The tidy table: one row per configuration × repetition × phase.

    Built column-wise (one configuration row per record, joined to its runs), so 100,000
    records aggregate in seconds.
    """
    configs: list[dict[str, Any]] = []
    runs: dict[str, list[Any]] = {k: [] for k in ("_record", *RUN_FIELDS, *TRACE_QUANTITIES)}
    per_device: list[dict[str, float]] = []
    for rec in records:
        if rec.get("status", "ok") != "ok":
            continue  # infeasible points have no measurements; see infeasible()
        index = len(configs)
        configs.append(_config_row(rec))
        runs["_record"].extend([index] * len(rec["runs"]))
        per_device.extend(run.get("energy_by_device_j") or {} for run in rec["runs"])
        for k in RUN_FIELDS:
            runs[k].extend([run[k] for run in rec["runs"]])
        for k in TRACE_QUANTITIES:  # absent from records made before power traces
            runs[k].extend([run.get(k) for run in rec["runs"]])
    if not runs["_record"]:
        raise AggregationError(
            "no result records with measurements to aggregate: every record is infeasible or "
            "failed; see the records' status and logs/"
        )
    config_df = pl.DataFrame(configs, infer_schema_length=None).with_row_index("_record")
    df = (
        pl.DataFrame(runs, strict=False)
        .with_columns(pl.col("_record").cast(pl.UInt32), pl.col(TRACE_QUANTITIES).cast(pl.Float64))
        .with_columns(_device_columns(per_device))
        .join(config_df, on="_record", how="left")
        .drop("_record")
        .with_columns(pl.col("sample_hz").cast(pl.Float64), pl.col("power_field").cast(pl.String))
    )
    return df.with_columns(
        tokens_per_s=pl.col("tokens") / pl.col("time_s"),
        j_per_token=pl.col("energy_j") / pl.col("tokens"),
        avg_power_w=pl.col("energy_j") / pl.col("time_s"),
        j_per_request=pl.col("energy_j") / pl.col("batch_size"),
        net_j_per_token=pl.col("net_energy_j") / pl.col("tokens"),
        direct_j_per_token=pl.col("direct_energy_j") / pl.col("tokens"),
    ).sort([*CONFIG_COLUMNS[:8], "phase", "rep"])


def _device_columns(per_device: list[dict[str, float]]) -> list[pl.Series]:
    """``energy_j[<device>]`` per run: each GPU (and CPU domain) of a job in its own column."""
    devices = sorted({d for row in per_device for d in row})
    return [
        pl.Series(f"energy_j[{d}]", [row.get(d) for row in per_device], dtype=pl.Float64)
        for d in devices
    ]


def infeasible(records: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per configuration that could not run, with the reason."""
    rows = [
        {
            k: rec["config"][k]
            for k in (
                "study",
                "model",
                "engine",
                "precision",
                "batch_size",
                "input_len",
                "output_len",
            )
        }
        | {
            "device": rec["config"]["device"],
            "config_id": rec["config_id"],
            "config_hash": rec["config_hash"],
            "status": rec["status"],
            "reason": rec.get("reason"),
        }
        for rec in records
        if rec.get("status", "ok") != "ok"
    ]
    schema = {"status": pl.String, "reason": pl.String}
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema=schema)


def summarize(
    tidy: pl.DataFrame, confidence: float = 0.95, failed: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per configuration × phase: n, mean, std and CI bounds of every metric.

    Configurations in ``failed`` (see infeasible()) get rows with their status and reason and
    empty metrics, so tables list them and figures show them as missing, never as zero.
    """
    keys = [*CONFIG_COLUMNS, "phase", "method"]
    aggs: list[pl.Expr] = [pl.len().alias("n"), pl.col("peak_memory_bytes").max()]
    aggs += [
        pl.col(c).first()
        for c in (*ENV_COLUMNS, *METHOD_COLUMNS, *VARIANT_COLUMNS, "input_tokens", "output_tokens")
    ]
    for m in METRICS:
        aggs += [
            pl.col(m).mean().alias(f"{m}_mean"),
            pl.col(m).std().alias(f"{m}_std"),
            pl.col(m).count().alias(f"_{m}_n"),  # a metric may be missing in some runs
        ]
    summary = tidy.group_by(keys).agg(aggs)
    counts = {n for m in METRICS for n in summary[f"_{m}_n"].unique().to_list() if n and n > 1}
    t_values = {n: t_quantile(0.5 + confidence / 2, n - 1) for n in counts}

    def half_width(m: str) -> pl.Expr:
        n = pl.col(f"_{m}_n")
        t = n.replace_strict(t_values, default=None, return_dtype=pl.Float64)
        return t * pl.col(f"{m}_std") / n.cast(pl.Float64).sqrt()

    half = {m: half_width(m) for m in METRICS}
    summary = summary.with_columns(
        *[(pl.col(f"{m}_mean") - half[m]).alias(f"{m}_ci_low") for m in METRICS],
        *[(pl.col(f"{m}_mean") + half[m]).alias(f"{m}_ci_high") for m in METRICS],
        confidence=pl.lit(confidence),
    )
    metric_cols = [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    summary = summary.with_columns(status=pl.lit("ok"), reason=pl.lit(None, pl.String))
    if failed is not None and failed.height:
        phases = pl.DataFrame({"phase": PHASES})
        summary = pl.concat(
            [summary, failed.join(phases, how="cross").with_columns(confidence=pl.lit(confidence))],
            how="diagonal_relaxed",
        )
    order = [
        *keys,
        "status",
        "reason",
        "n",
        "input_tokens",
        "output_tokens",
        *metric_cols,
        "peak_memory_bytes",
        "confidence",
        *METHOD_COLUMNS,
        *VARIANT_COLUMNS,
    ]
    return summary.select([*order, *ENV_COLUMNS]).sort(
        [*CONFIG_COLUMNS[:8], pl.col("phase").replace_strict(PHASES, list(range(3)))]
    )


def meter_label(summary: pl.DataFrame) -> str:
    """How figures name the energy source; an estimate is always called one."""
    sources = sorted(set(summary["meter_source"].drop_nulls().to_list()))
    label = ", ".join(sources)
    if "estimate" in sources:
        label += " (modelled from CPU time, not measured)"
    return label


def serving_table(records: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per serving experiment: energy per request three ways, latency, load, provenance."""
    rows = []
    for rec in records:
        cfg, exp, e, lat, ld = (
            rec["config"],
            rec["experiment"],
            rec["energy"],
            rec["latency"],
            rec["load"],
        )
        prov = rec["provenance"]
        idle = e.get("idle_baseline") or {}
        rows.append(
            {
                "study": cfg["study"],
                "model": cfg["model"],
                "precision": cfg["precision"],
                "server": rec["server"]["name"],
                "server_kind": rec["server"]["kind"],
                "experiment": exp["id"],
                "pattern": exp["pattern"],
                "process": exp["arrival"]["process"],
                "shaping": exp["shaping_label"],
                "offered_rate": ld["offered_rate"],
                "scheduled_rate": ld.get("scheduled_rate"),
                "achieved_rate": ld["achieved_rate"],
                "requests": ld["requests"],
                "ok": ld["ok"],
                "short": ld.get("short", 0),
                "errors": ld["error"],
                "timeouts": ld["timeout"],
                "window_s": e["window"]["time_s"],
                "window_energy_j": e["window"]["energy_j"],
                "j_per_request_window": e["window"]["j_per_request"],
                "j_per_request_attributed": e["attribution"]["j_per_request_scaled"],
                "j_per_request_attributed_raw": e["attribution"]["j_per_request_raw"],
                "idle_energy_j": e["attribution"]["idle_scaled_j"],
                "idle_share": e["attribution"]["idle_scaled_j"] / e["window"]["energy_j"],
                "closure_pct": e["attribution"]["closure_pct"],
                "conservation_pct": e["attribution"]["conservation_pct"],
                "attribution_ok": e["attribution"]["ok"],
                "j_per_token_window": e["window"]["j_per_token"],
                "j_per_token_steady": e["steady_state"]["j_per_token"],
                "steady_batch": e["steady_state"]["batch"],
                "idle_power_w": idle.get("power_w"),
                "avg_power_w": e["window"]["energy_j"] / e["window"]["time_s"],
                **{k: v for k, v in lat.items()},
                "send_lag_ms_p99": ld["send_lag_s_p99"] * 1000,
                "meter_source": rec["meter_source"],
                "server_may_run_elsewhere": rec["measured"]["server_may_run_elsewhere"],
                "config_id": rec["config_id"],
                "config_hash": rec["config_hash"],
                "host": prov["host"]["hostname"],
                "joulebench_version": prov["joulebench_version"],
                "git_commit": prov["git"]["commit"],
            }
        )
    if not rows:
        raise AggregationError("no serving records to aggregate")
    return pl.DataFrame(rows, infer_schema_length=None).sort(
        "model", "precision", "server", "pattern", "offered_rate"
    )


def report_context(summary: pl.DataFrame, generated: str) -> dict[str, str]:
    """What the findings report says its results come from (study, energy source, models,
    configurations, hosts, code), read from the summary table; ``generated`` is the time."""
    ok = summary.filter(status="ok")
    return {
        "study": ", ".join(sorted(set(summary["study"]))),
        "energy source": meter_label(summary),
        "models": ", ".join(sorted(set(summary["model"]))),
        "configurations": f"{summary['config_id'].n_unique()} "
        f"({ok['config_id'].n_unique()} measured)",
        "hosts": ", ".join(sorted(set(ok["host"].drop_nulls()))),
        "git commit": ", ".join(sorted(set(ok["git_commit"].drop_nulls()))) or "unknown",
        "generated": generated,
    }
