"""The results commands: `aggregate` (records → tables), `findings` (the report), `plot` and
`plot-power` (figures), `compare` (studies side by side), `forecast` (what a study will cost)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from joulebench.cli.options import Names, add_formats, config_section, save_chart
from joulebench.cli.serving import SERVING_COLUMNS
from joulebench.core import inputs

log = logging.getLogger("joulebench")

#: What a benchmark record must hold (checked before any output).
BENCH_RECORD_KEYS = ("config", "config_id", "config_hash", "provenance")
#: What the summary table must hold for the figures and the report.
SUMMARY_COLUMNS = ("config_id", "phase", "status", "precision", "batch_size")


class ForecastPower:
    """The forecast's default power per GPU, as help text shows it (read when shown)."""

    def __str__(self) -> str:
        from joulebench.results.forecast import DEFAULT_GPU_POWER_W

        return f"{DEFAULT_GPU_POWER_W:g}"


def study_figures() -> list[str]:
    """The study figures' names, from the plotting module."""
    from joulebench.results import figures

    return sorted(figures.FIGURES)


def cmd_aggregate(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_with
    from joulebench.results import analysis, derived

    cfg = config_section("analysis", args.analysis_json, "--analysis-json")
    records = [
        inputs.record_file(p, "records", "benchmark", BENCH_RECORD_KEYS) for p in args.records
    ]
    tidy = analysis.measurements(records)
    summary = analysis.summarize(tidy, cfg["confidence"], analysis.infeasible(records))
    summary = derived.enrich(summary, cfg)
    write_with(args.measurements, tidy.write_parquet)
    write_with(args.long, derived.long_table(tidy).write_parquet)
    write_with(args.summary, summary.write_parquet)
    write_with(args.summary_csv, summary.write_csv)
    log.info("aggregated %d records into %d summary rows", len(records), summary.height)


def cmd_findings(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_text
    from joulebench.provenance.record import now_utc
    from joulebench.results import analysis, findings, plots

    cfg = config_section("analysis", args.analysis_json, "--analysis-json")
    summary = inputs.parquet_file(args.summary, "--summary", SUMMARY_COLUMNS)
    tidy = inputs.parquet_file(args.measurements, "--measurements", ("config_id", "phase"))
    serving = (
        inputs.parquet_file(args.serving, "--serving", SERVING_COLUMNS) if args.serving else None
    )
    requests = (
        findings.request_energies(serving, Path(args.serving_dir))
        if serving is not None and args.serving_dir
        else None
    )
    results = findings.all_findings(summary, tidy, cfg, serving, requests)
    audit = None
    if args.audit:
        data = inputs.json_file(args.audit, "--audit")
        audit = findings.AuditLine(data["verdict"], [f["text"] for f in data["flags"]])
    context = analysis.report_context(summary, generated=now_utc())
    figures = plots.report_figures(summary, serving)
    write_text(args.out_md, findings.to_markdown(results, context, audit))
    write_text(args.out_html, findings.to_html(results, context, figures, audit))
    for f in results:
        log.info("%s: %s — %s", f.title, f.verdict, f.summary)


def cmd_plot(args: argparse.Namespace) -> None:
    from joulebench.results import plots

    summary = inputs.parquet_file(args.summary, "--summary", SUMMARY_COLUMNS)
    save_chart(plots.FIGURES[args.figure](summary), args)


def cmd_plot_power(args: argparse.Namespace) -> None:
    from joulebench.results import plots

    record = inputs.record_file(args.record, "record", "benchmark", ("config_id", "energy_method"))
    trace = inputs.parquet_file(args.trace, "--trace", ("t_s", "power_w"))
    save_chart(plots.power_over_time(record, trace), args)


def cmd_compare(args: argparse.Namespace) -> None:
    from joulebench.results import compare

    for path in compare.run(args.results, Path(args.out_dir), args.confidence):
        log.info("wrote %s", path)


def cmd_forecast(args: argparse.Namespace) -> None:
    from joulebench.results import forecast

    if args.dry_run == "-":
        text = sys.stdin.read()
    elif args.dry_run:
        text = inputs.existing_file(args.dry_run, "--dry-run").read_text(errors="replace")
    else:
        text = forecast.snakemake_dry_run(args.snakemake_args)
    jobs = forecast.parse_dry_run(text, forecast.local_rules())
    history = forecast.load_history(Path(args.results))
    power = {} if args.gpu_power_w is None else {"gpu_power_w": args.gpu_power_w}
    fc = forecast.forecast(jobs, history, **power)
    print(json.dumps(fc.to_dict(), indent=2) if args.json else forecast.render(fc))


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("aggregate", help="records → tidy measurements + summary tables")
    a.add_argument("records", nargs="+")
    a.add_argument("--measurements", required=True)
    a.add_argument("--summary", required=True)
    a.add_argument("--summary-csv", required=True)
    a.add_argument("--long", required=True, help="long table: metric, value, unit, source")
    a.add_argument("--analysis-json", help="the config's `analysis:` section as JSON")
    a.set_defaults(func=cmd_aggregate)

    fd = sub.add_parser("findings", help="the findings report: the paper's claims on your data")
    fd.add_argument("--summary", required=True)
    fd.add_argument("--measurements", required=True)
    fd.add_argument("--analysis-json", help="the config's `analysis:` section as JSON")
    fd.add_argument("--serving", help="the serving table (parquet), for the arrival-shaping claim")
    fd.add_argument("--serving-dir", help="per-request tables of --serving (results/serving)")
    fd.add_argument("--audit", help="the provenance audit (JSON) the report opens with")
    fd.add_argument("--out-md", required=True)
    fd.add_argument("--out-html", required=True)
    fd.set_defaults(func=cmd_findings)

    f = sub.add_parser("plot", help="draw one figure from the summary table")
    f.add_argument(
        "figure", choices=Names(study_figures), metavar="FIGURE", help="one of %(choices)s"
    )
    f.add_argument("--summary", required=True)
    f.add_argument("--out-stem", required=True, help="output path without suffix")
    add_formats(f)
    f.set_defaults(func=cmd_plot)

    pp = sub.add_parser("plot-power", help="draw one run's power over time, phases shaded")
    pp.add_argument("record", help="the run's record (JSON)")
    pp.add_argument("--trace", required=True, help="the run's power trace (parquet)")
    pp.add_argument("--out-stem", required=True, help="output path without suffix")
    add_formats(pp)
    pp.set_defaults(func=cmd_plot_power)

    cp = sub.add_parser(
        "compare",
        help="studies side by side: one table and figures, ratios to the first with CIs",
    )
    cp.add_argument("results", nargs="+", help="results directories (the first is the reference)")
    cp.add_argument("--out-dir", required=True, help="where the table, figures and page go")
    cp.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    cp.set_defaults(func=cmd_compare)

    fc = sub.add_parser(
        "forecast",
        help="what a study will cost (jobs, GPU-hours, energy) from a snakemake dry run",
        description="Runs `snakemake --dry-run SNAKEMAKE_ARGS` (or reads --dry-run FILE) and "
        "prints jobs per rule, scheduler submissions, GPU-hours from the requested runtimes "
        "and, where results exist, from measured durations of similar configurations.",
    )
    fc.add_argument("--dry-run", help="saved `snakemake --dry-run` output ('-': stdin)")
    fc.add_argument("--results", default="results", help="results directory with history")
    power = fc.add_argument(
        "--gpu-power-w",
        type=float,
        help="power per GPU for the upper energy bound (default: %(forecast_default)s W)",
    )
    # read from the forecast only when help is shown: every step's command builds this parser,
    # and the forecast's code is no step's (see provenance.codehash)
    power.forecast_default = ForecastPower()  # type: ignore[attr-defined]
    fc.add_argument("--json", action="store_true", help="machine-readable output")
    fc.add_argument(
        "snakemake_args",
        nargs=argparse.REMAINDER,
        help="arguments for snakemake (after --), e.g. -- --workflow-profile slurm",
    )
    fc.set_defaults(func=cmd_forecast)
