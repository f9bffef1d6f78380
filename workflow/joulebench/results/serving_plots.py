"""The study-wide figure over the serving table: energy per request and end-to-end latency per
arrival pattern and rate (``figures.SERVING_FIGURES``)."""

from __future__ import annotations

import altair as alt
import polars as pl

from joulebench.results.analysis import meter_label


def _dashes(domain: list[str]) -> alt.Scale:
    """First value solid, second dashed (said in the panel title; the legend hides dashes)."""
    return alt.Scale(domain=domain, range=[[1, 0], [5, 3]])


def serving_energy_latency(table: pl.DataFrame) -> alt.HConcatChart:
    """Energy per request (window and attributed) and p50/p99 e2e latency, per pattern and rate."""
    data = table.with_columns(
        rate=pl.coalesce("offered_rate", "achieved_rate"),
        setup=pl.format("{} · {} · {}", "model", "precision", "server"),
    )
    energy = data.unpivot(
        on=["j_per_request_window", "j_per_request_attributed"],
        index=["rate", "pattern", "shaping", "setup", "idle_share", "ok", "requests"],
        variable_name="method",
        value_name="j_per_request",
    ).with_columns(
        method=pl.col("method").replace_strict(
            {
                "j_per_request_window": "window / completed",
                "j_per_request_attributed": "attributed (in-flight share)",
            }
        )
    )
    latency = data.unpivot(
        on=["e2e_s_p50", "e2e_s_p99"],
        index=["rate", "pattern", "shaping", "setup"],
        variable_name="quantile",
        value_name="e2e_s",
    ).with_columns(pl.col("quantile").str.replace("e2e_s_", ""))
    colour = alt.Color("pattern:N", title="arrival pattern")
    x = alt.X("rate:Q", title="request rate (req/s)")
    left = (
        alt.Chart(energy)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("j_per_request:Q", title="energy per request (J)"),
            color=colour,
            strokeDash=alt.StrokeDash(
                "method:N",
                scale=_dashes(["attributed (in-flight share)", "window / completed"]),
                legend=None,
            ),
            tooltip=[
                "setup",
                "pattern",
                "shaping",
                "rate",
                "method",
                alt.Tooltip("j_per_request:Q", format=".3g"),
                alt.Tooltip("idle_share:Q", format=".0%"),
                "ok",
                "requests",
            ],
        )
        .properties(
            title=alt.Title(
                "Energy per request",
                subtitle="solid: attributed (in-flight share); dashed: window / completed",
            ),
            width=280,
            height=220,
        )
    )
    right = (
        alt.Chart(latency)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("e2e_s:Q", scale=alt.Scale(type="log"), title="end-to-end latency (s)"),
            color=colour,
            strokeDash=alt.StrokeDash("quantile:N", scale=_dashes(["p50", "p99"]), legend=None),
            tooltip=[
                "setup",
                "pattern",
                "shaping",
                "rate",
                "quantile",
                alt.Tooltip("e2e_s:Q", format=".3g"),
            ],
        )
        .properties(
            title=alt.Title("End-to-end latency from arrival", subtitle="solid: p50; dashed: p99"),
            width=280,
            height=220,
        )
    )
    setups = ", ".join(data["setup"].unique().sort())
    return (
        alt.hconcat(left, right)
        .resolve_scale(strokeDash="independent")
        .properties(
            title=alt.Title(
                "Serving: energy per request and latency per arrival pattern and rate",
                subtitle=f"energy source: {meter_label(table)}; {setups}",
            )
        )
    )
