"""`joulebench bench`: run one benchmark configuration and write its record."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from joulebench.cli.options import Names, names_option, precision_names
from joulebench.core import inputs
from joulebench.core.errors import JoulebenchError

log = logging.getLogger("joulebench")

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


def engines() -> list[str]:
    """The engine names, from the engine registry (imported only when argparse needs them)."""
    from joulebench.harness.engines import ENGINES

    return list(ENGINES)


def meters() -> tuple[str, ...]:
    """The meter names a spec may ask for, from the energy registry."""
    from joulebench.energy.choice import METERS

    return METERS


def devices() -> list[str]:
    """The devices a benchmark may run on, from the config schema."""
    from joulebench.study.config import load_schema

    return load_schema()["properties"]["device"]["enum"]


def _spec_json_key(key: str) -> str:
    return "--spec-json" if key == "<top>" else f"--spec-json key '{key}'"


def _flag_of(key: str) -> str:
    return BENCH_FLAGS.get(key, "--vllm-json" if key.startswith("engine_options") else key)


def _meter_arg(value: str | None) -> str | list[str] | None:
    """``--meter nvml,rapl`` → a list; one name stays a name."""
    if value is None:
        return None
    from joulebench.energy.choice import meter_names

    names = meter_names([v.strip() for v in value.split(",") if v.strip()], key="--meter")
    return names[0] if len(names) == 1 else names


def spec_from_flags(args: argparse.Namespace) -> Any:
    """The benchmark spec the flags (or ``--spec-json``) describe, checked."""
    from joulebench.study.config import bench_spec

    if args.spec_json:
        return bench_spec(inputs.json_text(args.spec_json, "--spec-json"), _spec_json_key)
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
    return bench_spec(given, _flag_of)


def cmd_bench(args: argparse.Namespace) -> None:
    from joulebench.core.atomic import write_json
    from joulebench.harness import bench

    if args.model is None and not args.spec_json:
        args.model = args.model_dir.name
    model_dir = inputs.model_dir(args.model_dir, "--model-dir")
    spec = spec_from_flags(args)
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
    print_record_summary(record)
    log.info("wrote %s", args.out)


def print_record_summary(record: dict[str, Any]) -> None:
    """The record at a glance: its meter and trace, then per phase the medians over reps."""
    from joulebench.harness.phase_summary import phase_medians

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
    for m in phase_medians(record):
        print(
            f"  {m.phase:8s} {m.j_per_token:10.4g} {m.direct_j_per_token:10.4g} "
            f"{m.net_j_per_token:8.4g}   {m.tokens_per_s:9.4g}  {m.conservation_pct:+.2f}%"
            f"   (median over {m.repetitions} reps)"
        )


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="run one benchmark configuration and write its record")
    b.add_argument("--model-dir", required=True, type=Path, help="a Hugging Face model directory")
    b.add_argument("--out", required=True, type=Path, help="where to write the record (JSON)")
    b.add_argument("--spec-json", help="the whole configuration as JSON (what the workflow passes)")
    b.add_argument("--variant", help="variant.json written by `joulebench variant`")
    b.add_argument("--model", help="model name for the record (default: the directory name)")
    b.add_argument("--study", default="manual")
    b.add_argument(
        "--engine",
        default="transformers",
        choices=Names(engines),
        metavar="ENGINE",
        help="%(choices)s (default: %(default)s)",
    )
    names_option(b, "--precision", names=Names(precision_names), help="%(names)s")
    b.add_argument("--tensor-parallel", type=int, default=1, help="GPUs (vllm engine)")
    b.add_argument("--vllm-json", help="vllm engine settings (the config's vllm: section) as JSON")
    b.add_argument(
        "--device",
        default="auto",
        choices=Names(devices),
        metavar="DEVICE",
        help="%(choices)s (default: %(default)s)",
    )
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--input-len", type=int, default=64)
    b.add_argument("--output-len", type=int, default=64)
    names_option(
        b,
        "--meter",
        names=Names(meters),
        help="%(names)s; several at once with commas (e.g. nvml,rapl)",
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
