"""Figures as altair specs over the summary table, saved as interactive HTML and PNG.

Besides the study-wide figures (``FIGURES``, one per study), ``power_over_time`` draws one run:
its power trace with the idle, warmup, prefill and decode intervals shaded;
``serving_power_over_time`` draws one serving experiment: its power trace over the load window
with the number of requests in flight under it; ``COMPARE_FIGURES`` draw several studies side
by side (`joulebench compare`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from joulebench.results import derived
from joulebench.results import stats
from joulebench.results.analysis import meter_label
from joulebench.core.atomic import atomic_path

log = logging.getLogger(__name__)

#: One colour per precision, everywhere.
PRECISION_COLOURS = {
    "fp32": "#4c78a8",
    "fp16": "#f58518",
    "bf16": "#54a24b",
    "cpu-int8": "#e45756",
}
PHASE_COLOURS = {"prefill": "#72b7b2", "decode": "#b279a2"}
#: Shading of a run's timeline in the power chart.
INTERVAL_COLOURS = {
    "idle": "#bab0ac",
    "warmup": "#eeca3b",
    "prefill": PHASE_COLOURS["prefill"],
    "decode": PHASE_COLOURS["decode"],
}
#: At most this many trace points per device are drawn (evenly thinned beyond it).
MAX_POINTS_PER_DEVICE = 20_000


def _precision_scale(values: list[str]) -> alt.Scale:
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
    colour = alt.Color("precision:N", scale=_precision_scale(data["precision"].unique().to_list()))
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
    colour = alt.Color("precision:N", scale=_precision_scale(data["precision"].unique().to_list()))
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


def _intervals(record: dict[str, Any]) -> pl.DataFrame:
    """The shaded intervals of a run: idle, warmup, 1-token prefill windows, and for every full
    generation its prefill [start, first token] and decode [first token, end]."""
    info = record.get("energy_method") or {}
    spans = [
        (t["label"], t["start_s"], t["end_s"])
        for t in info.get("timeline", [])
        if t["label"] in ("idle", "warmup")
    ]
    for run in record["runs"]:
        if run.get("start_s") is None:
            continue
        if run["phase"] == "prefill":
            spans.append(("prefill", run["start_s"], run["end_s"]))
        elif run["phase"] == "full":
            for start, first, end in run.get("calls", []):
                if first == first:  # not NaN: the first token was marked
                    spans += [("prefill", start, first), ("decode", first, end)]
    return pl.DataFrame(
        spans,
        schema={"interval": pl.String, "start_s": pl.Float64, "end_s": pl.Float64},
        orient="row",
    )


def _line_interpolation(trace: pl.DataFrame) -> str:
    """Interval samples are the mean since the previous sample: draw them as steps."""
    kinds = set(trace["interpolation"].drop_nulls().to_list())
    return "step-before" if kinds == {"interval"} else "linear"


def power_over_time(record: dict[str, Any], trace: pl.DataFrame) -> alt.LayerChart:
    """Power of every traced device over one run, with idle/warmup/prefill/decode shaded."""
    points = trace.filter(pl.col("power_w").is_not_null()).select(
        "t_s", "device", "source", "power_w", "power_field"
    )
    per_device = points.group_by("device").len()["len"].max() or 0
    if per_device > MAX_POINTS_PER_DEVICE:
        step = -(-per_device // MAX_POINTS_PER_DEVICE)
        points = points.filter((pl.int_range(pl.len()).over("device") % step) == 0)
    info = record.get("energy_method") or {}
    idle = info.get("idle") or {}
    source = record["meter"]["source"]
    label = meter_label(
        pl.DataFrame({"meter_source": [source]}, schema={"meter_source": pl.String})
    )
    fields = ", ".join(sorted(set((info.get("power_fields") or {}).values()))) or "none"
    subtitle = [
        f"energy source: {label}; power field: {fields}; {info.get('sample_hz', 0):g} Hz",
        f"idle {idle['power_w']:.1f} W over {idle['duration_s']:.1f} s"
        if idle
        else "no idle baseline",
    ]
    shade = (
        alt.Chart(_intervals(record))
        .mark_rect(opacity=0.25)
        .encode(
            x=alt.X("start_s:Q", title="time since the idle baseline began (s)"),
            x2="end_s:Q",
            color=alt.Color(
                "interval:N",
                title="interval",
                scale=alt.Scale(
                    domain=list(INTERVAL_COLOURS), range=list(INTERVAL_COLOURS.values())
                ),
            ),
        )
    )
    line = (
        alt.Chart(points)
        .mark_line(interpolate=_line_interpolation(trace), strokeWidth=1)
        .encode(
            x="t_s:Q",
            y=alt.Y("power_w:Q", title="power (W)"),
            color=alt.Color("device:N", title="device", scale=alt.Scale(scheme="dark2")),
            tooltip=[
                "device",
                "source",
                "power_field",
                alt.Tooltip("t_s:Q", format=".3f"),
                alt.Tooltip("power_w:Q", format=".1f"),
            ],
        )
    )
    if record.get("status", "ok") != "ok":  # nothing was measured: say why, draw no numbers
        subtitle = [f"{record['status']}: {record.get('reason')}"]
    prefix = "[estimate] " if "estimate" in (source or "") else ""
    return (
        alt.layer(shade, line)
        .resolve_scale(color="independent")
        .properties(
            width=720,
            height=260,
            title=alt.Title(f"{prefix}Power over time: {record['config_id']}", subtitle=subtitle),
        )
    )


FIGURES = {
    "energy_per_token_vs_batch": energy_per_token_vs_batch,
    "phase_energy_per_request": phase_energy_per_request,
    "time_energy_pareto": time_energy_pareto,
}


def to_svg(chart: alt.TopLevelMixin) -> str:
    """The chart as a standalone SVG string (no scripts), for reports that must open offline."""
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())


FORMATS = (".html", ".png", ".svg")


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


SERVING_FIGURES = {"serving_energy_latency": serving_energy_latency}


def compare_energy_per_token(compared: pl.DataFrame) -> alt.FacetChart:
    """J/token against batch size, one colour per study, a line per precision, per phase."""
    data = compared.filter(pl.col("j_per_token_mean") > 0).with_columns(
        low=pl.col("j_per_token_ci_low").fill_nan(None).fill_null(pl.col("j_per_token_mean")),
        high=pl.col("j_per_token_ci_high").fill_nan(None).fill_null(pl.col("j_per_token_mean")),
    )
    floor = data["j_per_token_mean"].min() / 10 if data.height else 1e-9
    data = data.with_columns(low=pl.max_horizontal("low", pl.lit(floor)))
    colour = alt.Color("study:N", title="study (host · GPU or threads)")
    x = alt.X("batch_size:Q", scale=alt.Scale(type="log", base=2), title="batch size")
    y = alt.Scale(type="log")
    base = alt.Chart().encode(x=x, color=colour, strokeDash=alt.StrokeDash("precision:N"))
    line = base.mark_line(point=True).encode(
        y=alt.Y("j_per_token_mean:Q", scale=y, title="energy per token (J)"),
        tooltip=[
            "study",
            "model",
            "precision",
            "batch_size",
            "input_len",
            "output_len",
            alt.Tooltip("j_per_token_mean:Q", format=".3g"),
            alt.Tooltip("j_per_token_ratio:Q", format=".3f"),
            "n",
        ],
    )
    bars = base.mark_errorbar().encode(
        y=alt.Y("low:Q", scale=y, title="energy per token (J)"), y2="high:Q"
    )
    return (
        alt.layer(line, bars, data=data)
        .facet(
            column=alt.Column("phase:N", sort=["prefill", "decode", "full"], title=None),
            row=alt.Row("model:N", title=None),
        )
        .properties(
            title=alt.Title(
                "Energy per token vs batch size, study by study",
                subtitle="colour: study; dashes: precision; error bars: CI over repetitions",
            )
        )
        .resolve_scale(y="independent")
    )


def compare_ratio(compared: pl.DataFrame) -> alt.FacetChart:
    """Each study's J/token ÷ the first study's, per measurement, with its bootstrap CI."""
    others = compared.filter(
        pl.col("j_per_token_ratio").is_not_null(), pl.col("study") != pl.col("vs")
    )
    # a log axis cannot show a ratio at or below zero (decode J/token is a difference of two
    # windows and can come out negative on a noisy machine): such points are counted, not drawn
    data = others.filter(pl.col("j_per_token_ratio") > 0).with_columns(
        point=pl.format("{} · bs {} · {}/{}", "precision", "batch_size", "input_len", "output_len")
    )
    # nor a CI reaching zero or below: such bars end at the axis floor instead
    floor = data["j_per_token_ratio"].min() or 1.0
    data = data.with_columns(
        low_shown=pl.max_horizontal(pl.col("ratio_ci_low"), pl.lit(min(floor, 1.0) / 10)),
        high_shown=pl.max_horizontal(pl.col("ratio_ci_high"), pl.lit(min(floor, 1.0) / 10)),
    )
    vs = data["vs"][0] if data.height else ""
    y = alt.Y("point:N", title=None, sort=None)
    colour = alt.Color("study:N", title="study")
    dots = (
        alt.Chart()
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X(
                "j_per_token_ratio:Q",
                scale=alt.Scale(type="log"),
                title=f"energy per token ÷ that of {vs}",
            ),
            y=y,
            color=colour,
            tooltip=[
                "study",
                "point",
                alt.Tooltip("j_per_token_ratio:Q", format=".3f"),
                alt.Tooltip("ratio_ci_low:Q", format=".3f"),
                alt.Tooltip("ratio_ci_high:Q", format=".3f"),
            ],
        )
    )
    bars = alt.Chart().mark_rule().encode(x="low_shown:Q", x2="high_shown:Q", y=y, color=colour)
    one = alt.Chart().mark_rule(strokeDash=[4, 3], color="#666").encode(x=alt.datum(1.0))
    return (
        alt.layer(one, bars, dots, data=data)
        .facet(column=alt.Column("phase:N", sort=["prefill", "decode", "full"], title=None))
        .properties(
            title=alt.Title(
                f"Energy per token relative to {vs}",
                subtitle=f"bootstrap CI over both studies' repetitions ({stats.RESAMPLES} "
                f"resamples, seed {stats.SEED}); dashed: same energy"
                + (
                    f"; {others.height - data.height} ratio(s) ≤ 0 not drawn"
                    if others.height > data.height
                    else ""
                ),
            )
        )
    )


#: Figures of `joulebench compare` (over its table: one row per study × measurement).
COMPARE_FIGURES = {
    "compare_energy_per_token": compare_energy_per_token,
    "compare_ratio": compare_ratio,
}


def in_flight(table: pl.DataFrame) -> pl.DataFrame:
    """Requests in flight over time (a step function) from the request table's sent/end times."""
    sent = table.filter(pl.col("sent_s").is_not_nan() & pl.col("sent_s").is_not_null())
    events = pl.concat(
        [
            sent.select(t_s=pl.col("sent_s"), change=pl.lit(1)),
            sent.filter(pl.col("end_s").is_not_nan()).select(
                t_s=pl.col("end_s"), change=pl.lit(-1)
            ),
        ]
    ).sort("t_s", "change")
    start = pl.DataFrame({"t_s": [0.0], "change": [0]}, schema=events.schema)
    return pl.concat([start, events]).select("t_s", in_flight=pl.col("change").cum_sum())


def serving_power_over_time(
    record: dict[str, Any], trace: pl.DataFrame, table: pl.DataFrame
) -> alt.VConcatChart:
    """Power of every traced device over one serving experiment, requests in flight under it."""
    w = record["window"]
    origin = w["load_start_s"]
    points = trace.filter(pl.col("power_w").is_not_null()).select(
        "t_s", "device", "source", "power_w", "power_field"
    )
    per_device = points.group_by("device").len()["len"].max() or 0
    if per_device > MAX_POINTS_PER_DEVICE:
        step = -(-per_device // MAX_POINTS_PER_DEVICE)
        points = points.filter((pl.int_range(pl.len()).over("device") % step) == 0)
    source = record["meter_source"]
    label = meter_label(
        pl.DataFrame({"meter_source": [source]}, schema={"meter_source": pl.String})
    )
    a = record["energy"]["attribution"]
    x_scale = alt.Scale(domain=[w["start_s"] - origin, w["end_s"] - origin])
    x = alt.X("t_s:Q", title="time since the load started (s)", scale=x_scale)
    power = (
        alt.Chart(points)
        .mark_line(interpolate=_line_interpolation(trace), strokeWidth=1)
        .encode(
            x=x,
            y=alt.Y("power_w:Q", title="power (W)"),
            color=alt.Color("device:N", title="device", scale=alt.Scale(scheme="dark2")),
            tooltip=[
                "device",
                "source",
                "power_field",
                alt.Tooltip("t_s:Q", format=".3f"),
                alt.Tooltip("power_w:Q", format=".1f"),
            ],
        )
        .properties(width=720, height=220)
    )
    flight = (
        alt.Chart(in_flight(table))
        .mark_line(interpolate="step-after", color="#4c78a8")
        .encode(x=x, y=alt.Y("in_flight:Q", title="requests in flight"))
        .properties(width=720, height=90)
    )
    where = (
        " (external server: this host's energy)"
        if record["measured"]["server_may_run_elsewhere"]
        else ""
    )
    subtitle = [
        f"energy source: {label}{where}; window {w['energy_j']:.4g} J over {w['time_s']:.3g} s",
        f"closure {a['closure_pct']:+.2f}%, conservation {a['conservation_pct']:+.2f}% "
        "(before scaling)",
    ]
    prefix = "[estimate] " if "estimate" in source else ""
    return alt.vconcat(power, flight).properties(
        title=alt.Title(f"{prefix}Power over time: {record['config_id']}", subtitle=subtitle)
    )


def save(chart: alt.TopLevelMixin, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``stem`` with each suffix of ``formats``: .html (interactive, scripts inlined so it
    opens offline), .png, .svg. Without vl-convert (which inlines the scripts and renders PNG and
    SVG) only .html can be written, and its page loads Vega from the jsDelivr CDN when opened."""
    from joulebench.core import optional

    inline = optional.renderer_available()
    if not inline:
        log.warning("vl-convert is not installed: %s.html loads Vega from its CDN", stem.name)
    written = []
    for suffix in formats:
        target = stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            if suffix == ".png":
                chart.save(tmp, format="png", scale_factor=2)
            elif suffix == ".svg":
                tmp.write_text(to_svg(chart), encoding="utf-8")
            else:
                chart.save(tmp, format="html", inline=inline)
        written.append(target)
    return written


def report_figures(summary: pl.DataFrame, serving: pl.DataFrame | None = None) -> dict[str, str]:
    """Every study figure (and, with a serving table, every serving figure) as inline SVG, by
    name: the figures the findings page shows."""
    figures = {name: to_svg(make(summary)) for name, make in FIGURES.items()}
    if serving is not None:
        figures |= {name: to_svg(make(serving)) for name, make in SERVING_FIGURES.items()}
    return figures
