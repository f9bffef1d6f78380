"""The figures of `joulebench compare` over its table (one row per study × measurement):
energy per token study by study, and each study's energy relative to the first
(``figures.COMPARE_FIGURES``)."""

from __future__ import annotations

import altair as alt
import polars as pl

from joulebench.results import stats


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
