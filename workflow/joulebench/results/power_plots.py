"""Power over time: one benchmark run's trace with its idle, warmup, prefill and decode
intervals shaded (``figures.POWER_FIGURE``), and one serving experiment's trace over the load
window with the requests in flight under it (``figures.SERVING_POWER_FIGURE``)."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from joulebench.results.analysis import meter_label
from joulebench.results.study_plots import PHASE_COLOURS

#: Shading of a run's timeline in the power chart.
INTERVAL_COLOURS = {
    "idle": "#bab0ac",
    "warmup": "#eeca3b",
    "prefill": PHASE_COLOURS["prefill"],
    "decode": PHASE_COLOURS["decode"],
}
#: At most this many trace points per device are drawn (evenly thinned beyond it).
MAX_POINTS_PER_DEVICE = 20_000


def intervals(record: dict[str, Any]) -> pl.DataFrame:
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


def line_interpolation(trace: pl.DataFrame) -> str:
    """Interval samples are the mean since the previous sample: draw them as steps."""
    kinds = set(trace["interpolation"].drop_nulls().to_list())
    return "step-before" if kinds == {"interval"} else "linear"


def drawn_points(trace: pl.DataFrame) -> pl.DataFrame:
    """The trace's power samples to draw, at most MAX_POINTS_PER_DEVICE per device (evenly
    thinned beyond it)."""
    points = trace.filter(pl.col("power_w").is_not_null()).select(
        "t_s", "device", "source", "power_w", "power_field"
    )
    per_device = points.group_by("device").len()["len"].max() or 0
    if per_device > MAX_POINTS_PER_DEVICE:
        step = -(-per_device // MAX_POINTS_PER_DEVICE)
        points = points.filter((pl.int_range(pl.len()).over("device") % step) == 0)
    return points


def source_label(source: str | None) -> str:
    """How a chart names one record's energy source (an estimate labelled as one)."""
    return meter_label(pl.DataFrame({"meter_source": [source]}, schema={"meter_source": pl.String}))


def power_lines(points: pl.DataFrame, trace: pl.DataFrame, x: Any) -> alt.Chart:
    """One line per traced device: power over time (``x``), drawn as the trace interpolates."""
    return (
        alt.Chart(points)
        .mark_line(interpolate=line_interpolation(trace), strokeWidth=1)
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
    )


def power_over_time(record: dict[str, Any], trace: pl.DataFrame) -> alt.LayerChart:
    """Power of every traced device over one run, with idle/warmup/prefill/decode shaded."""
    points = drawn_points(trace)
    info = record.get("energy_method") or {}
    idle = info.get("idle") or {}
    source = record["meter"]["source"]
    label = source_label(source)
    fields = ", ".join(sorted(set((info.get("power_fields") or {}).values()))) or "none"
    subtitle = [
        f"energy source: {label}; power field: {fields}; {info.get('sample_hz', 0):g} Hz",
        f"idle {idle['power_w']:.1f} W over {idle['duration_s']:.1f} s"
        if idle
        else "no idle baseline",
    ]
    shade = (
        alt.Chart(intervals(record))
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
    line = power_lines(points, trace, "t_s:Q")
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
    points = drawn_points(trace)
    source = record["meter_source"]
    label = source_label(source)
    a = record["energy"]["attribution"]
    x_scale = alt.Scale(domain=[w["start_s"] - origin, w["end_s"] - origin])
    x = alt.X("t_s:Q", title="time since the load started (s)", scale=x_scale)
    power = power_lines(points, trace, x).properties(width=720, height=220)
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
