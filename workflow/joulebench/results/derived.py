"""Derived quantities over the summary: per-token and per-request energy, tokens/J, energy and
speed relative to a baseline, carbon and cost, the long table, and Pareto frontiers.

Carbon and cost are *derived from configured inputs* (grid intensity, prices), never measured;
the columns say which inputs they came from.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from joulebench.results.analysis import CONFIG_COLUMNS

#: Units of the tidy table's metrics, for the long table.
UNITS = {
    "energy_j": "J",
    "time_s": "s",
    "tokens": "tokens",
    "tokens_per_s": "tokens/s",
    "j_per_token": "J/token",
    "avg_power_w": "W",
    "j_per_request": "J/request",
}

#: Columns that make two summary rows comparable (everything but precision and batch size).
COMPARABLE = [
    "study",
    "model",
    "engine",
    "device",
    "input_len",
    "output_len",
    "phase",
    "meter_source",
]

J_PER_KWH = 3.6e6


def long_table(tidy: pl.DataFrame) -> pl.DataFrame:
    """Every measurement as one row: configuration columns, phase, metric, value, unit, source."""
    id_cols = [c for c in CONFIG_COLUMNS if c != "config_hash"] + ["phase", "method", "rep"]
    return (
        tidy.unpivot(index=id_cols, on=list(UNITS), variable_name="metric", value_name="value")
        .with_columns(
            value=pl.col("value").cast(pl.Float64),
            unit=pl.col("metric").replace_strict(UNITS),
        )
        .rename({"meter_source": "source"})
    )


def per_token_columns(summary: pl.DataFrame) -> pl.DataFrame:
    """J per input token, J per output token and tokens per joule for every summary row."""
    energy = pl.col("energy_j_mean")
    return summary.with_columns(
        j_per_input_token=pl.when(pl.col("input_tokens") > 0).then(energy / pl.col("input_tokens")),
        j_per_output_token=pl.when(pl.col("output_tokens") > 0).then(
            energy / pl.col("output_tokens")
        ),
        tokens_per_j=1.0 / pl.col("j_per_token_mean"),
    )


def relative_to_baseline(summary: pl.DataFrame, precision: str, batch_size: int) -> pl.DataFrame:
    """Energy per token relative to the baseline configuration, and speed-up over it.

    The baseline of a row is the row with the same model, engine, lengths, phase and meter at
    the baseline precision and batch size; rows without one get nulls.
    """
    base = (
        summary.filter(precision=precision, batch_size=batch_size, status="ok")
        .group_by(COMPARABLE)  # one baseline per group, even if several records match it
        .agg(
            base_j_per_token=pl.col("j_per_token_mean").mean(),
            base_tokens_per_s=pl.col("tokens_per_s_mean").mean(),
        )
    )
    return (
        summary.join(base, on=COMPARABLE, how="left", nulls_equal=True)
        .with_columns(
            energy_vs_baseline=pl.col("j_per_token_mean") / pl.col("base_j_per_token"),
            speedup_vs_baseline=pl.col("tokens_per_s_mean") / pl.col("base_tokens_per_s"),
            baseline=pl.lit(f"{precision}, batch {batch_size}"),
        )
        .drop("base_j_per_token", "base_tokens_per_s")
    )


def carbon_and_cost(
    summary: pl.DataFrame,
    grid_g_per_kwh: float,
    price_per_kwh: float,
    price_per_device_hour: float,
    currency: str,
) -> pl.DataFrame:
    """gCO2e and cost per request, derived from the configured intensity and prices."""
    kwh_per_request = pl.col("j_per_request_mean") / J_PER_KWH
    device_hours_per_request = pl.col("time_s_mean") / 3600.0 / pl.col("batch_size")
    inputs = (
        f"derived from config: {grid_g_per_kwh:g} gCO2e/kWh, {price_per_kwh:g} {currency}/kWh, "
        f"{price_per_device_hour:g} {currency}/device-hour"
    )
    return summary.with_columns(
        gco2e_per_request=kwh_per_request * grid_g_per_kwh,
        cost_per_request=kwh_per_request * price_per_kwh
        + device_hours_per_request * price_per_device_hour,
        currency=pl.lit(currency),
        carbon_cost_inputs=pl.lit(inputs),
    )


def pareto_front(df: pl.DataFrame, x: str, y: str) -> pl.Series:
    """True for rows no other row beats on both ``x`` and ``y`` (lower is better for both)."""
    order = df.with_row_index("_i").sort([x, y])
    best = float("inf")
    keep = [False] * df.height
    for i, value in zip(order["_i"], order[y], strict=True):
        if value is not None and value < best:
            keep[i] = True
            best = value
    return pl.Series("pareto", keep)


def enrich(summary: pl.DataFrame, analysis_cfg: dict[str, Any]) -> pl.DataFrame:
    """All derived columns, from the `analysis:` section of the config."""
    base = analysis_cfg["baseline"]
    out = relative_to_baseline(per_token_columns(summary), base["precision"], base["batch_size"])
    return carbon_and_cost(
        out,
        analysis_cfg["grid_intensity_g_per_kwh"],
        analysis_cfg["price_per_kwh"],
        analysis_cfg["price_per_device_hour"],
        analysis_cfg["currency"],
    )
