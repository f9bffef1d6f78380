"""The study-wide figures over the summary table: energy per token against batch size, prefill
and decode energy per request, and the time–energy trade-off with its Pareto frontier.

Each is drawn by the function of its name (``figures.FIGURES``), as an altair chart.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from joulebench.results import derived
from joulebench.results.analysis import meter_label

#: One colour per precision, everywhere.
PRECISION_COLOURS = {
    "fp32": "#4c78a8",
    "fp16": "#f58518",
    "bf16": "#54a24b",
    "cpu-int8": "#e45756",
}
PHASE_COLOURS = {"prefill": "#72b7b2", "decode": "#b279a2"}


def precision_scale(values: list[str]) -> alt.Scale:
    """Colours of ``values``: the fixed colour of each known precision, then spares."""
    domain = [p for p in PRECISION_COLOURS if p in values] + sorted(
        v for v in values if v not in PRECISION_COLOURS
    )
    extra = ["#9d755d", "#bab0ac", "#eeca3b", "#ff9da6"]
    colours = [PRECISION_COLOURS.get(p) or extra[i % len(extra)] for i, p in enumerate(domain)]
    return alt.Scale(domain=domain, range=colours)


def energy_per_token_vs_batch(summary: pl.DataFrame) -> alt.FacetChart:
    """J/token against batch size, one line per precision, prefill and decode side by side."""
    data = summary.filter(
        pl.col("phase").is_in(["prefill", "decode"]),
        pl.col("j_per_token_mean") > 0,
        status="ok",
    ).with_columns(shape=pl.format("in {} / out {}", "input_len", "output_len"))
    # A log axis cannot show a CI that reaches zero: such bars end at the axis floor instead.
    floor = data["j_per_token_mean"].min() / 10 if data.height else 1e-9
    low = pl.col("j_per_token_ci_low").fill_nan(None)
    high = pl.col("j_per_token_ci_high").fill_nan(None)
    mean = pl.col("j_per_token_mean")
    data = data.with_columns(
        ci_low_shown=pl.when(low.is_null()).then(mean).otherwise(pl.max_horizontal(low, floor)),
        ci_high_shown=high.fill_null(mean),
    )
    colour = alt.Color("precision:N", scale=precision_scale(data["precision"].unique().to_list()))
    x = alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="batch size")
    base = alt.Chart().encode(x=x, color=colour, strokeDash=alt.StrokeDash("shape:N"))
    line = base.mark_line(point=True).encode(
        y=alt.Y("j_per_token_mean:Q", scale=alt.Scale(type="log"), title="energy per token (J)"),
        tooltip=[
            "model",
            "precision",
            "engine",
            "batch_size",
            "input_len",
            "output_len",
            alt.Tooltip("j_per_token_mean:Q", format=".3g"),
            alt.Tooltip("tokens_per_s_mean:Q", format=".4g"),
            "n",
        ],
    )
    bars = base.mark_errorbar().encode(
        y=alt.Y("ci_low_shown:Q", scale=alt.Scale(type="log"), title="energy per token (J)"),
        y2="ci_high_shown:Q",
    )
    return (
        alt.layer(line, bars, data=data)
        .facet(
            column=alt.Column("phase:N", sort=["prefill", "decode"], title=None),
            row=alt.Row("model:N", title=None),
        )
        .properties(
            title=alt.Title(
                "Energy per token vs batch size "
                "(prefill: per input token; decode: per output token)",
                subtitle=f"energy source: {meter_label(summary)}; error bars: "
                f"{summary['confidence'][0]:.0%} CI over repetitions",
            )
        )
        .resolve_scale(y="independent")
    )


def phase_energy_per_request(summary: pl.DataFrame) -> alt.FacetChart:
    """Prefill and decode energy per request, stacked, for every configuration."""
    data = summary.filter(pl.col("phase").is_in(["prefill", "decode"]), status="ok").with_columns(
        configuration=pl.format(
            "{} · bs {} · {}/{}", "precision", "batch_size", "input_len", "output_len"
        )
    )
    rank = {p: i for i, p in enumerate(PRECISION_COLOURS)}
    order = data.sort(
        pl.col("precision").replace_strict(rank, default=len(rank)),
        "precision",
        "batch_size",
        "input_len",
        "output_len",
    )["configuration"]
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X(
                "configuration:N", sort=order.unique(maintain_order=True).to_list(), title=None
            ),
            y=alt.Y("j_per_request_mean:Q", stack="zero", title="energy per request (J)"),
            color=alt.Color(
                "phase:N",
                scale=alt.Scale(domain=list(PHASE_COLOURS), range=list(PHASE_COLOURS.values())),
                sort=["prefill", "decode"],
            ),
            order=alt.Order("phase_order:Q"),
            tooltip=[
                "model",
                "precision",
                "batch_size",
                "phase",
                alt.Tooltip("j_per_request_mean:Q", format=".3g"),
                alt.Tooltip("time_s_mean:Q", format=".3g"),
            ],
        )
        .transform_calculate(phase_order="datum.phase == 'prefill' ? 0 : 1")
    )
    return (
        chart.facet(column=alt.Column("model:N", title=None))
        .properties(
            title=alt.Title(
                "Prefill vs decode energy per request",
                subtitle=f"energy source: {meter_label(summary)}; decode = full generate − prefill",
            )
        )
        .resolve_scale(x="independent")
    )


def time_energy_pareto(summary: pl.DataFrame) -> alt.LayerChart:
    """Latency per request vs energy per request for every configuration; frontier highlighted."""
    full = summary.filter(phase="full", status="ok").filter(
        pl.col("j_per_request_mean").is_not_null()
    )
    data = full.with_columns(
        derived.pareto_front(full, "time_s_mean", "j_per_request_mean"),
        label=pl.format("{} · {} · bs {}", "model", "precision", "batch_size"),
    )
    colour = alt.Color("precision:N", scale=precision_scale(data["precision"].unique().to_list()))
    x = alt.X(
        "time_s_mean:Q", scale=alt.Scale(type="log"), title="latency per request (s, end to end)"
    )
    y = alt.Y("j_per_request_mean:Q", scale=alt.Scale(type="log"), title="energy per request (J)")
    points = (
        alt.Chart(data)
        .mark_point(size=90, filled=True)
        .encode(
            x=x,
            y=y,
            color=colour,
            shape=alt.Shape("pareto:N", title="on the frontier", sort=[True, False]),
            opacity=alt.condition("datum.pareto", alt.value(1.0), alt.value(0.35)),
            tooltip=[
                "label",
                "engine",
                "input_len",
                "output_len",
                alt.Tooltip("time_s_mean:Q", format=".3g"),
                alt.Tooltip("j_per_request_mean:Q", format=".3g"),
                "pareto",
            ],
        )
    )
    frontier = (
        alt.Chart(data.filter("pareto"))
        .mark_line(color="#333", strokeDash=[4, 3])
        .encode(x=x, y=y, order="time_s_mean:Q")
    )
    return alt.layer(frontier, points).properties(
        width=520,
        height=360,
        title=alt.Title(
            "Time–energy trade-off per request (lower-left is better)",
            subtitle=f"energy source: {meter_label(summary)}; dashed: Pareto frontier; "
            "latency = full generation window of the batch",
        ),
    )
