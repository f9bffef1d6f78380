"""Beyond the paper: the least-energy configuration per model and workload that meets the
latency SLO (offline: precision × batch × engine; serving: the arrival shaping), and its saving
against the default setup."""

from __future__ import annotations

from typing import Any

import polars as pl

from joulebench.results.serving_claims import UNSHAPED
from joulebench.results.verdicts import FAILS, MISSING, RECOMMENDATION, Finding


def _ok(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.filter(pl.col("j_per_token_mean").is_not_null(), status="ok")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def latency_table(tidy: pl.DataFrame) -> pl.DataFrame:
    """Per configuration: TTFT (prefill window) and end-to-end (full window) p50/p99, seconds."""
    pivot = (
        tidy.filter(pl.col("phase").is_in(["prefill", "full"]))
        .group_by("config_id", "phase")
        .agg(p50=pl.col("time_s").median(), p99=pl.col("time_s").quantile(0.99, "linear"))
    )
    ttft = pivot.filter(phase="prefill").select("config_id", ttft_p50_s="p50", ttft_p99_s="p99")
    e2e = pivot.filter(phase="full").select("config_id", e2e_p50_s="p50", e2e_p99_s="p99")
    return ttft.join(e2e, on="config_id")


#: SLO keys of the config → latency columns of the serving table.
SERVING_LATENCY = {
    "ttft_p50_s": "ttft_s_p50",
    "ttft_p99_s": "ttft_s_p99",
    "e2e_p50_s": "e2e_s_p50",
    "e2e_p99_s": "e2e_s_p99",
}


def _meets(slo: dict[str, float], columns: dict[str, str] | None = None) -> pl.Expr:
    meets = pl.lit(True)
    for key, limit in slo.items():
        meets = meets & (pl.col((columns or {}).get(key, key)) <= limit)
    return meets


def _offline_best(
    summary: pl.DataFrame, tidy: pl.DataFrame, slo: dict[str, float], baseline: dict[str, Any]
) -> pl.DataFrame:
    """Per model and workload: the offline configuration (precision × batch × engine)."""
    full = _ok(summary).filter(phase="full").join(latency_table(tidy), on="config_id")
    work = ["model", "engine", "input_len", "output_len"]
    base = full.filter(precision=baseline["precision"], batch_size=baseline["batch_size"]).select(
        *work, base_j=pl.col("j_per_request_mean")
    )
    return (
        full.filter(_meets(slo))
        .sort("j_per_request_mean")
        .group_by(work, maintain_order=True)
        .first()
        .join(base, on=work, how="left")
        .select(
            "model",
            workload=pl.format("offline, in {} / out {}", "input_len", "output_len"),
            setup=pl.format("{} · {} · batch {}", "engine", "precision", "batch_size"),
            j_per_request=pl.col("j_per_request_mean").round(4),
            ttft_p99_s=pl.col("ttft_p99_s").round(4),
            e2e_p99_s=pl.col("e2e_p99_s").round(4),
            saving_x=(pl.col("base_j") / pl.col("j_per_request_mean")).round(3),
            against=pl.lit(f"{baseline['precision']}, batch {baseline['batch_size']}"),
        )
    )


def _serving_best(serving: pl.DataFrame, slo: dict[str, float]) -> pl.DataFrame:
    """Per model, precision, server and offered rate: the arrival shaping, vs unshaped."""
    keys = ["model", "precision", "server", "offered_rate"]
    energy = pl.col("j_per_request_window")
    base = serving.filter(pl.col("shaping") == UNSHAPED).group_by(keys).agg(base_j=energy.min())
    return (
        serving.filter(_meets(slo, SERVING_LATENCY), energy.is_not_null())
        .sort(energy)
        .group_by(keys, maintain_order=True)
        .first()
        .join(base, on=keys, how="left")
        .select(
            "model",
            workload=pl.format("serving at {} req/s", "offered_rate"),
            setup=pl.format("{} · {} · {}", "server", "precision", "pattern"),
            j_per_request=energy.round(4),
            ttft_p99_s=pl.col("ttft_s_p99").round(4),
            e2e_p99_s=pl.col("e2e_s_p99").round(4),
            saving_x=(pl.col("base_j") / energy).round(3),
            against=pl.lit("the same rate, unshaped arrivals"),
        )
    )


def slo_recommendation(
    summary: pl.DataFrame,
    tidy: pl.DataFrame,
    slo: dict[str, float],
    baseline: dict[str, Any],
    serving: pl.DataFrame | None = None,
) -> Finding:
    """Beyond the paper: the least-energy configuration per model that meets the latency SLO."""
    title = "Least energy per request within the latency SLO"
    limits = ", ".join(f"{k.removesuffix('_s')} ≤ {v:g} s" for k, v in slo.items()) or "none"
    claim = (
        f"For each model and workload, the configuration (precision × batch × engine, and for "
        f"serving the arrival shaping) with the least energy per request that meets the SLO "
        f"({limits}), and its saving against the default setup."
    )
    rule = (
        "Offline: energy per request = full-generation energy ÷ batch size; TTFT = prefill "
        "window, end-to-end = full window (p99 over repetitions); savings against "
        f"{baseline['precision']}, batch {baseline['batch_size']}. Serving: window energy ÷ "
        "completed requests; TTFT and end-to-end from each request's arrival (p50/p99); savings "
        "against unshaped arrivals at the same rate."
    )
    if _ok(summary).is_empty() and (serving is None or serving.is_empty()):
        return Finding(title, claim, MISSING, "no measured configurations", rule)
    parts = [_offline_best(summary, tidy, slo, baseline)] if not _ok(summary).is_empty() else []
    if serving is not None and not serving.is_empty():
        parts.append(_serving_best(serving, slo))
    best = pl.concat(parts, how="vertical_relaxed").sort("model", "workload")
    if best.is_empty():
        return Finding(title, claim, FAILS, "no configuration meets the SLO", rule)
    top = best["saving_x"].max()
    text = (
        f"{best.height} workload(s): the best configuration within the SLO uses up to "
        f"{_fmt(top)} less energy per request than the default setup."
    )
    return Finding(title, claim, RECOMMENDATION, text, rule, best)
