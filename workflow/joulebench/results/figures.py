"""The names of every figure, in one place, without plotting imports.

Building the workflow's DAG takes figure names from here (wildcards, outputs), so it never
imports altair; the chart modules draw each figure with the function of its name, and each
figure in the Snakemake report has its own caption, ``workflow/report/figures/<name>.rst``.
"""

from __future__ import annotations

#: The file formats a figure is saved in (HTML always; PNG and SVG need vl-convert-python).
FORMATS = (".html", ".png", ".svg")

#: Study-wide figures over the summary table (`joulebench plot NAME`, one rule each).
FIGURES = ("energy_per_token_vs_batch", "phase_energy_per_request", "time_energy_pareto")

#: Study-wide figures over the serving table (`joulebench plot-serving NAME`).
SERVING_FIGURES = ("serving_energy_latency",)

#: One benchmark run's power trace (`joulebench plot-power`), one chart per configuration.
POWER_FIGURE = "power_over_time"

#: One serving experiment's power trace (`joulebench plot-serving-power`).
SERVING_POWER_FIGURE = "serving_power_over_time"

#: Figures of `joulebench compare`, drawn outside the workflow (no report entry).
COMPARE_FIGURES = ("compare_energy_per_token", "compare_ratio")

#: Every figure the workflow's report shows; each has exactly one caption file.
REPORT_FIGURES = (*FIGURES, *SERVING_FIGURES, POWER_FIGURE, SERVING_POWER_FIGURE)
