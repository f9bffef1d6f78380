"""Command-line interface: every workflow step can also be run by hand (e.g. on a GPU node)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from joulebench import __version__
from joulebench.core import inputs
from joulebench.core.errors import ConfigError, JoulebenchError
from joulebench.harness.engines import ENGINES
from joulebench.models.precisions import PRECISIONS

log = logging.getLogger("joulebench")

#: What a record must hold for each command that reads records (checked before any output).
BENCH_RECORD_KEYS = ("config", "config_id", "config_hash", "provenance")
SERVING_RECORD_KEYS = ("config", "experiment", "energy", "latency", "load", "server")
#: What the summary and serving tables must hold for the figures and the report.
SUMMARY_COLUMNS = ("config_id", "phase", "status", "precision", "batch_size")
SERVING_COLUMNS = ("experiment", "pattern")

#: Figure names, kept here so `--help` needs no plotting imports (tests check they agree).
FIGURE_NAMES = ("energy_per_token_vs_batch", "phase_energy_per_request", "time_energy_pareto")


def _section_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of one config section (``measurement``, ``analysis``)."""
    from joulebench.study.config import _with_defaults, load_schema

    return _with_defaults({}, load_schema()["properties"][section])


def _section_json(section: str, text: str | None, argument: str) -> dict[str, Any]:
    """A config section passed as JSON (``--analysis-json``), checked against the schema and
    with its defaults filled in."""
    import jsonschema

    from joulebench.study.config import load_schema

    given = inputs.json_object(text, argument) if text else {}
    schema = load_schema()["properties"][section]
    error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(given)), None)
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "the object"
        raise inputs.ArgumentError(argument, f"{where}: {error.message}")
    return _section_defaults(section) | given


def _analysis_config(text: str | None) -> dict[str, Any]:
    return _section_json("analysis", text, "--analysis-json")


#: The flags of `joulebench bench` by the spec key each one sets.
BENCH_FLAGS = {
    "<top>": "bench",
    "model": "--model",
    "engine": "--engine",
    "precision": "--precision",
    "device": "--device",
    "batch_size": "--batch-size",
    "input_len": "--input-len",
    "output_len": "--output-len",
    "tensor_parallel": "--tensor-parallel",
    "study": "--study",
    "measurement.meter": "--meter",
    "measurement.warmup_runs": "--warmup",
    "measurement.repetitions": "--repetitions",
    "measurement.min_window_s": "--min-window-s",
    "measurement.sample_hz": "--sample-hz",
    "measurement.idle_s": "--idle-s",
}


def _spec_json_key(key: str) -> str:
    return "--spec-json" if key == "<top>" else f"--spec-json key '{key}'"


def _flag_of(key: str) -> str:
    return BENCH_FLAGS.get(key, "--vllm-json" if key.startswith("engine_options") else key)


def cmd_bench(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.harness import bench
    from joulebench.study.config import bench_spec

    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    if args.spec_json:
        spec = bench_spec(inputs.json_text(args.spec_json, "--spec-json"), _spec_json_key)
    else:
        missing = [f for f in ("model", "precision") if getattr(args, f) is None]
        if missing:
            raise JoulebenchError(f"bench needs --spec-json or --{' --'.join(missing)}")
        overrides = {
            "meter": _meter_arg(args.meter),
            "warmup_runs": args.warmup,
            "repetitions": args.repetitions,
            "min_window_s": args.min_window_s,
            "sample_hz": args.sample_hz,
            "idle_s": args.idle_s,
        }
        given = {
            "study": args.study,
            "model": args.model,
            "engine": args.engine,
            "precision": args.precision,
            "device": args.device,
            "batch_size": args.batch_size,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "measurement": {k: v for k, v in overrides.items() if v is not None},
            "tensor_parallel": args.tensor_parallel,
            "engine_options": inputs.json_object(args.vllm_json, "--vllm-json")
            if args.vllm_json
            else {},
        }
        spec = bench_spec(given, _flag_of)
    variant = inputs.json_file(args.variant, "--variant") if args.variant else None
    trace_out = args.trace_out or args.out.with_suffix(".trace.parquet")
    record = bench.run(
        spec,
        str(model_dir),
        variant,
        progress=not args.quiet,
        threads=args.threads,
        trace_out=trace_out,
        skip_unsupported=args.skip_unsupported,
    )
    write_json(args.out, record)
    _print_record_summary(record)
    log.info("wrote %s", args.out)


def _meter_arg(value: str | None) -> str | list[str] | None:
    """``--meter nvml,rapl`` → a list; one name stays a name."""
    if value is None:
        return None
    from joulebench.energy import meter_names

    names = meter_names([v.strip() for v in value.split(",") if v.strip()], key="--meter")
    return names[0] if len(names) == 1 else names


def _median(values: list[float | None]) -> float:
    from statistics import median

    present = [v for v in values if v is not None]
    return median(present) if present else float("nan")


def _per_token(run: dict[str, Any], key: str) -> float | None:
    return None if run.get(key) is None else run[key] / run["tokens"]


def _print_record_summary(record: dict[str, Any]) -> None:
    if record["status"] != "ok":
        print(f"{record['config_id']}  {record['status']}: {record['reason']}")
        return
    info = record["energy_method"]
    idle = info["idle"]["power_w"] if info["idle"] else float("nan")
    print(
        f"{record['config_id']}  (meter: {record['meter']['source']}, "
        f"trace {info['sample_hz']} Hz, idle {idle:.4g} W)"
    )
    print("  phase    J/token (subtraction  direct  net)   tokens/s  trace-vs-meter")
    for phase in ("prefill", "decode", "full"):
        runs = [r for r in record["runs"] if r["phase"] == phase]
        j_tok = _median([r["energy_j"] / r["tokens"] for r in runs])
        direct = _median([_per_token(r, "direct_energy_j") for r in runs])
        net = _median([_per_token(r, "net_energy_j") for r in runs])
        tps = _median([r["tokens"] / r["time_s"] for r in runs])
        cons = _median([r["conservation_pct"] for r in runs])
        print(
            f"  {phase:8s} {j_tok:10.4g} {direct:10.4g} {net:8.4g}   {tps:9.4g}  {cons:+.2f}%"
            f"   (median over {len(runs)} reps)"
        )


def cmd_prepare_model(args: argparse.Namespace) -> None:
    from joulebench.models import sources as models
    from joulebench.study.config import check_model_entry

    try:
        spec = check_model_entry(inputs.json_object(args.spec_json, "--spec-json"), args.config_key)
    except ConfigError as err:
        raise inputs.ArgumentError(f"--spec-json ({err.key})", err.message) from None
    models.prepare(
        spec, Path(args.out), key=args.config_key, cache=models.cache_dir(args.cache_dir)
    )
    log.info("model '%s' ready in %s", spec["name"], args.out)


def _quantization_config(text: str | None) -> dict[str, Any]:
    return _section_json("quantization", text, "--quantization-json")


def cmd_variant(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.models.precisions import get_precision, variant_manifest

    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    precision = get_precision(args.precision, "--precision")
    if precision.writes_checkpoint:
        raise JoulebenchError(
            f"{precision.name} is a checkpoint the workflow writes; make it (and its manifest) "
            f"with `joulebench quantize --model-dir {args.model_dir} --precision "
            f"{precision.name} --out-dir DIR --manifest {args.out}`"
        )
    quantization = _quantization_config(args.quantization_json)
    manifest = variant_manifest(model_dir, precision, quantization)
    write_json(args.out, manifest)
    log.info("variant %s: %s", args.precision, manifest["sizes"])


def cmd_quantize(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.models.precisions import get_precision, variant_manifest
    from joulebench.models.quantize import cached_checkpoint
    from joulebench.models.sources import cache_dir

    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    precision = get_precision(args.precision, "--precision")
    if not precision.writes_checkpoint:
        raise JoulebenchError(
            f"{precision.name} writes no checkpoint; describe it with `joulebench variant`"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    quantization = _quantization_config(args.quantization_json)
    written = cached_checkpoint(
        model_dir, precision, quantization, Path(args.out_dir), cache_dir(args.cache_dir)
    )
    manifest = variant_manifest(
        model_dir,
        precision,
        quantization,
        checkpoint=written.path,
        made_by=written.made_by,
        recipe=written.recipe,
    )
    write_json(args.manifest, manifest)
    log.info("variant %s in %s: %s", precision.name, written.path, manifest["sizes"])


def cmd_aggregate(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_with
    from joulebench.results import analysis, derived

    cfg = _analysis_config(args.analysis_json)
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
    from joulebench.provenance import record as provenance
    from joulebench.results import analysis, findings, plots

    cfg = _analysis_config(args.analysis_json)
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
    ok = summary.filter(status="ok")
    context = {
        "study": ", ".join(sorted(set(summary["study"]))),
        "energy source": analysis.meter_label(summary),
        "models": ", ".join(sorted(set(summary["model"]))),
        "configurations": f"{summary['config_id'].n_unique()} "
        f"({ok['config_id'].n_unique()} measured)",
        "hosts": ", ".join(sorted(set(ok["host"].drop_nulls()))),
        "git commit": ", ".join(sorted(set(ok["git_commit"].drop_nulls()))) or "unknown",
        "generated": provenance.now_utc(),
    }
    figures = {name: plots.to_svg(make(summary)) for name, make in plots.FIGURES.items()}
    if serving is not None:
        figures |= {n: plots.to_svg(make(serving)) for n, make in plots.SERVING_FIGURES.items()}
    write_text(args.out_md, findings.to_markdown(results, context, audit))
    write_text(args.out_html, findings.to_html(results, context, figures, audit))
    for f in results:
        log.info("%s: %s — %s", f.title, f.verdict, f.summary)


def figure_suffixes(value: str) -> tuple[str, ...]:
    """``html,png`` → ``(".html", ".png")``, each checked."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in ("html", "png", "svg"):
            raise argparse.ArgumentTypeError(
                f"unknown figure format '{name}'; allowed: html, png, svg"
            )
    return tuple(f".{name}" for name in names)


#: ``--formats`` of every plotting command (the config's figure_formats).
FORMATS_OPTION: dict[str, Any] = {
    "dest": "formats",
    "metavar": "html,png,svg",
    "type": figure_suffixes,
    "default": (".html", ".png", ".svg"),
    "help": "files to write (png and svg need vl-convert-python; default: all three)",
}


def cmd_plot(args: argparse.Namespace) -> None:

    from joulebench.results import plots

    summary = inputs.parquet_file(args.summary, "--summary", SUMMARY_COLUMNS)
    chart = plots.FIGURES[args.figure](summary)
    for path in plots.save(chart, Path(args.out_stem), args.formats):
        log.info("wrote %s", path)


def cmd_plot_power(args: argparse.Namespace) -> None:

    from joulebench.results import plots

    record = inputs.record_file(args.record, "record", "benchmark", ("config_id", "energy_method"))
    trace = inputs.parquet_file(args.trace, "--trace", ("t_s", "power_w"))
    chart = plots.power_over_time(record, trace)
    for path in plots.save(chart, Path(args.out_stem), args.formats):
        log.info("wrote %s", path)


def cmd_plot_serving_power(args: argparse.Namespace) -> None:
    from joulebench.results import plots

    record = inputs.record_file(args.record, "record", "serving", ("window", "energy"))
    trace = inputs.parquet_file(args.trace, "--trace", ("t_s", "power_w"))
    table = inputs.parquet_file(args.table, "--table", ("sent_s", "end_s"))
    chart = plots.serving_power_over_time(record, trace, table)
    for path in plots.save(chart, Path(args.out_stem), args.formats):
        log.info("wrote %s", path)


def cmd_serve(args: argparse.Namespace) -> None:
    from joulebench.serving.session import run_session
    from joulebench.study.serving_specs import SessionSpec

    # main() turns SIGTERM into SystemExit, so `finally` stops the server on a kill too
    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    given = inputs.json_object(args.spec_json, "--spec-json")
    session_fields = [f for f in dataclasses.fields(SessionSpec)]
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

    chart = plots.SERVING_FIGURES[args.figure](
        inputs.parquet_file(args.table, "--table", SERVING_COLUMNS)
    )
    for path in plots.save(chart, Path(args.out_stem), args.formats):
        log.info("wrote %s", path)


def cmd_validate(args: argparse.Namespace) -> None:
    from joulebench.study import config

    cfg = config.load(args.configfile)
    specs = config.expand(cfg)
    print(f"{args.configfile}: valid; {len(specs)} benchmark configurations")
    for spec in specs:
        print(f"  {spec.config_id}")
    skipped = config.unsupported(cfg)
    if skipped:
        print(f"{len(skipped)} combinations skipped (skip_unsupported: true):")
        for _, reason in skipped:
            print(f"  {reason}")
    from joulebench.study.serving_specs import session_specs

    sessions = session_specs(cfg)
    if sessions:
        print(f"{len(sessions)} serving sessions, each with these experiments:")
        for session in sessions:
            print(f"  {session.session_id}")
        for exp in sessions[0].experiments:
            print(f"    {exp['id']}: {exp['arrival']} shaping {exp['shaping']}")


def cmd_presets(args: argparse.Namespace) -> None:
    from joulebench.models.sources import PRESETS

    for name, arch in PRESETS.items():
        print(
            f"{name:14s} {arch['model_type']:6s} hidden {arch['hidden_size']:5d}  "
            f"layers {arch['num_hidden_layers']:3d}  vocab {arch['vocab_size']}"
        )


def cmd_forecast(args: argparse.Namespace) -> None:
    import subprocess

    from joulebench.results import forecast

    if args.dry_run == "-":
        text = sys.stdin.read()
    elif args.dry_run:
        text = inputs.existing_file(args.dry_run, "--dry-run").read_text(errors="replace")
    else:
        extra = [a for a in args.snakemake_args if a != "--"]
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "--dry-run", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            lines = [line.strip() for line in run.stderr.splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit {run.returncode}"
            raise JoulebenchError(f"snakemake --dry-run failed: {why}")
        text = run.stdout
    jobs = forecast.parse_dry_run(text, forecast.local_rules())
    history = forecast.load_history(Path(args.results))
    fc = forecast.forecast(jobs, history, args.gpu_power_w)
    print(json.dumps(fc.to_dict(), indent=2) if args.json else forecast.render(fc))


def cmd_provenance(args: argparse.Namespace) -> None:
    from joulebench.results import audit

    status = audit.command(
        args.records,
        as_json=args.json,
        strict=args.strict,
        checkout_hash=args.code_hash,
        out_csv=args.out_csv,
        out_json=args.out_json,
    )
    if status:
        raise SystemExit(status)


def cmd_compare(args: argparse.Namespace) -> None:
    from joulebench.results import compare

    for path in compare.run(args.results, Path(args.out_dir), args.confidence):
        log.info("wrote %s", path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joulebench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"joulebench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="run one benchmark configuration and write its record")
    b.add_argument("--model-dir", required=True, type=Path, help="a Hugging Face model directory")
    b.add_argument("--out", required=True, type=Path, help="where to write the record (JSON)")
    b.add_argument("--spec-json", help="the whole configuration as JSON (what the workflow passes)")
    b.add_argument("--variant", help="variant.json written by `joulebench variant`")
    b.add_argument("--model", help="model name for the record (default: the directory name)")
    b.add_argument("--study", default="manual")
    b.add_argument("--engine", default="transformers", choices=list(ENGINES))
    b.add_argument("--precision", help=", ".join(PRECISIONS))
    b.add_argument("--tensor-parallel", type=int, default=1, help="GPUs (vllm engine)")
    b.add_argument("--vllm-json", help="vllm engine settings (the config's vllm: section) as JSON")
    b.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--input-len", type=int, default=64)
    b.add_argument("--output-len", type=int, default=64)
    b.add_argument(
        "--meter", help="auto, nvml, rapl or estimate; several at once with commas: nvml,rapl"
    )
    b.add_argument("--sample-hz", type=float, help="power trace rate (0 = no trace)")
    b.add_argument("--idle-s", type=float, help="idle baseline seconds (default: by meter)")
    b.add_argument(
        "--trace-out", type=Path, help="power trace parquet (default: beside --out, .trace.parquet)"
    )
    b.add_argument("--warmup", type=int)
    b.add_argument("--repetitions", type=int)
    b.add_argument("--min-window-s", type=float)
    b.add_argument("--threads", type=int, help="CPU threads (used where the spec says 0 = all)")
    b.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="a variant this job's engine, GPU or CPU cannot run gives an infeasible record "
        "(the config's skip_unsupported) instead of an error",
    )
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_bench)

    p = sub.add_parser("prepare-model", help="synthesize, download or link one model")
    p.add_argument("--spec-json", required=True, help="one `models:` entry as JSON")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--config-key", default="models[]", help="the entry's key in errors, e.g. models[0]"
    )
    p.add_argument(
        "--cache-dir",
        help="the shared model cache (default: $JOULEBENCH_CACHE_DIR or ~/.cache/joulebench)",
    )
    p.set_defaults(func=cmd_prepare_model)

    v = sub.add_parser("variant", help="describe a precision variant of a model (variant.json)")
    v.add_argument("--model-dir", required=True)
    v.add_argument("--precision", required=True)
    v.add_argument("--quantization-json", help="the config's quantization: section, as JSON")
    v.add_argument("--out", required=True)
    v.set_defaults(func=cmd_variant)

    q = sub.add_parser(
        "quantize",
        help="write a ct-* variant: a compressed-tensors checkpoint and its variant.json",
    )
    q.add_argument("--model-dir", required=True, help="the source model directory")
    q.add_argument(
        "--precision",
        required=True,
        choices=[p.name for p in PRECISIONS.values() if p.writes_checkpoint],
    )
    q.add_argument("--quantization-json", help="the config's quantization: section, as JSON")
    q.add_argument("--out-dir", required=True, help="the checkpoint directory to write")
    q.add_argument("--manifest", required=True, help="where to write variant.json")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    q.add_argument(
        "--cache-dir",
        help="the shared model cache (default: $JOULEBENCH_CACHE_DIR or ~/.cache/joulebench)",
    )
    q.set_defaults(func=cmd_quantize)

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
    f.add_argument("figure", choices=sorted(FIGURE_NAMES))
    f.add_argument("--summary", required=True)
    f.add_argument("--out-stem", required=True, help="output path without suffix")
    f.add_argument("--formats", **FORMATS_OPTION)
    f.set_defaults(func=cmd_plot)

    pp = sub.add_parser("plot-power", help="draw one run's power over time, phases shaded")
    pp.add_argument("record", help="the run's record (JSON)")
    pp.add_argument("--trace", required=True, help="the run's power trace (parquet)")
    pp.add_argument("--out-stem", required=True, help="output path without suffix")
    pp.add_argument("--formats", **FORMATS_OPTION)
    pp.set_defaults(func=cmd_plot_power)

    sp = sub.add_parser(
        "plot-serving-power", help="one serving experiment's power over time, requests in flight"
    )
    sp.add_argument("record", help="the experiment's record (JSON)")
    sp.add_argument("--trace", required=True, help="its power trace (parquet)")
    sp.add_argument("--table", required=True, help="its request table (parquet)")
    sp.add_argument("--out-stem", required=True, help="output path without suffix")
    sp.add_argument("--formats", **FORMATS_OPTION)
    sp.set_defaults(func=cmd_plot_serving_power)

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
    ps.add_argument("figure", choices=["serving_energy_latency"])
    ps.add_argument("--table", required=True)
    ps.add_argument("--out-stem", required=True, help="output path without suffix")
    ps.add_argument("--formats", **FORMATS_OPTION)
    ps.set_defaults(func=cmd_plot_serving)

    c = sub.add_parser("validate", help="check a config file and list its configurations")
    c.add_argument("configfile")
    c.set_defaults(func=cmd_validate)

    r = sub.add_parser("presets", help="list the synthetic architecture presets")
    r.set_defaults(func=cmd_presets)

    pv = sub.add_parser(
        "provenance",
        help="where records came from: one record in detail, or a study audited for comparability",
    )
    pv.add_argument("records", nargs="+", help="record files and/or results directories")
    pv.add_argument("--json", action="store_true", help="the raw provenance / audit as JSON")
    pv.add_argument("--strict", action="store_true", help="exit 1 when anything is flagged")
    pv.add_argument("--code-hash", help="the checkout's bench code hash (default: this one's)")
    pv.add_argument("--out-csv", help="write the audit table (one row per record) here")
    pv.add_argument("--out-json", help="write the audit (verdict, flags, rows) here")
    pv.set_defaults(func=cmd_provenance)

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
    fc.add_argument(
        "--gpu-power-w",
        type=float,
        default=700.0,
        help="power per GPU for the upper energy bound (default: 700, H100 SXM)",
    )
    fc.add_argument("--json", action="store_true", help="machine-readable output")
    fc.add_argument(
        "snakemake_args",
        nargs=argparse.REMAINDER,
        help="arguments for snakemake (after --), e.g. -- --workflow-profile slurm",
    )
    fc.set_defaults(func=cmd_forecast)
    return parser


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGINT/SIGHUP (SLURM time limit, scancel, Ctrl-C) into SystemExit.

    Python's default SIGTERM kills the process without running ``finally`` blocks; as an
    exception it unwinds them, so atomic writes remove their temp files and nothing half-written
    is left behind.
    """

    def handler(signum: int, _frame: object) -> None:
        log.error("received %s: stopping, nothing partial is kept", signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        exit_on_signals()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "bench" and args.model is None and not args.spec_json:
        args.model = args.model_dir.name
    try:
        args.func(args)
    except JoulebenchError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
