"""The serving commands: `serve` (one session: a server and its loads), `aggregate-serving` (the
serving table), `plot-serving` and `plot-serving-power` (its figures)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from joulebench.cli.options import Names, add_formats, save_chart
from joulebench.core import inputs

log = logging.getLogger("joulebench")

#: What a serving record must hold (checked before any output).
SERVING_RECORD_KEYS = ("config", "experiment", "energy", "latency", "load", "server")
#: What the serving table must hold for its figures and the report.
SERVING_COLUMNS = ("experiment", "pattern")


def serving_figures() -> list[str]:
    """The serving figures' names, from the plotting module."""
    from joulebench.results import figures

    return sorted(figures.SERVING_FIGURES)


def cmd_serve(args: argparse.Namespace) -> None:
    from joulebench.serving.session import run_session
    from joulebench.study.serving_specs import SessionSpec

    # main() turns SIGTERM into SystemExit, so `finally` stops the server on a kill too
    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    given = inputs.json_object(args.spec_json, "--spec-json")
    session_fields = dataclasses.fields(SessionSpec)
    inputs.keys_of(
        given,
        "--spec-json",
        [f.name for f in session_fields if f.default is dataclasses.MISSING],
        [f.name for f in session_fields],
    )
    spec = SessionSpec.from_dict(given)
    written = run_session(
        spec,
        str(model_dir),
        Path(args.out_dir),
        Path(args.server_log) if args.server_log else None,
    )
    log.info("session %s: wrote %d experiment records", spec.session_id, len(written))


def cmd_aggregate_serving(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_with
    from joulebench.results import analysis

    records = [
        inputs.record_file(p, "records", "serving", SERVING_RECORD_KEYS) for p in args.records
    ]
    table = analysis.serving_table(records)
    write_with(args.table, table.write_parquet)
    write_with(args.table_csv, table.write_csv)
    log.info("serving table: %d experiments", table.height)


def cmd_plot_serving(args: argparse.Namespace) -> None:
    from joulebench.results import plots

    table = inputs.parquet_file(args.table, "--table", SERVING_COLUMNS)
    save_chart(plots.SERVING_FIGURES[args.figure](table), args)


def cmd_plot_serving_power(args: argparse.Namespace) -> None:
    from joulebench.results import plots

    record = inputs.record_file(args.record, "record", "serving", ("window", "energy"))
    trace = inputs.parquet_file(args.trace, "--trace", ("t_s", "power_w"))
    table = inputs.parquet_file(args.table, "--table", ("sent_s", "end_s"))
    save_chart(plots.serving_power_over_time(record, trace, table), args)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run one serving session: start a server, run its loads")
    s.add_argument("--model-dir", required=True, type=Path)
    s.add_argument(
        "--spec-json", required=True, help="the session as JSON (what the workflow passes)"
    )
    s.add_argument(
        "--out-dir",
        required=True,
        help="per-experiment .json, .parquet (requests) and .trace.parquet (power) go here",
    )
    s.add_argument(
        "--server-log", help="where the server's output goes (default OUT_DIR/server.log)"
    )
    s.set_defaults(func=cmd_serve)

    ag = sub.add_parser("aggregate-serving", help="serving records → one serving table")
    ag.add_argument("records", nargs="+")
    ag.add_argument("--table", required=True)
    ag.add_argument("--table-csv", required=True)
    ag.set_defaults(func=cmd_aggregate_serving)

    ps = sub.add_parser("plot-serving", help="draw a serving figure from the serving table")
    ps.add_argument(
        "figure", choices=Names(serving_figures), metavar="FIGURE", help="one of %(choices)s"
    )
    ps.add_argument("--table", required=True)
    ps.add_argument("--out-stem", required=True, help="output path without suffix")
    add_formats(ps)
    ps.set_defaults(func=cmd_plot_serving)

    sp = sub.add_parser(
        "plot-serving-power", help="one serving experiment's power over time, requests in flight"
    )
    sp.add_argument("record", help="the experiment's record (JSON)")
    sp.add_argument("--trace", required=True, help="its power trace (parquet)")
    sp.add_argument("--table", required=True, help="its request table (parquet)")
    sp.add_argument("--out-stem", required=True, help="output path without suffix")
    add_formats(sp)
    sp.set_defaults(func=cmd_plot_serving_power)
