"""Figures by name, and saving them: the drawing function of every figure named in
``figures`` (charts in study_plots, serving_plots, power_plots, compare_plots), written as
interactive HTML, PNG and SVG."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import polars as pl

from joulebench.core.atomic import atomic_path
from joulebench.results import compare_plots, figures, serving_plots, study_plots
from joulebench.results.power_plots import power_over_time, serving_power_over_time

log = logging.getLogger(__name__)

#: Each figure is drawn by the function of its name in its chart module.
FIGURES = {name: getattr(study_plots, name) for name in figures.FIGURES}
SERVING_FIGURES = {name: getattr(serving_plots, name) for name in figures.SERVING_FIGURES}
COMPARE_FIGURES = {name: getattr(compare_plots, name) for name in figures.COMPARE_FIGURES}
#: The per-run figures: a benchmark run's and a serving experiment's power trace.
POWER_FIGURES = {
    figures.POWER_FIGURE: power_over_time,
    figures.SERVING_POWER_FIGURE: serving_power_over_time,
}


def to_svg(chart: alt.TopLevelMixin) -> str:
    """The chart as a standalone SVG string (no scripts), for reports that must open offline."""
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_json())


def save(
    chart: alt.TopLevelMixin, stem: Path, formats: Sequence[str] = figures.FORMATS
) -> list[Path]:
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
    drawn = {name: to_svg(make(summary)) for name, make in FIGURES.items()}
    if serving is not None:
        drawn |= {name: to_svg(make(serving)) for name, make in SERVING_FIGURES.items()}
    return drawn
