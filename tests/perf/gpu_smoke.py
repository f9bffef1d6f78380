"""GPU smoke test of the measurement layer: a ~1B Llama-shaped model, NVML meter, one table.

On a CUDA machine with torch, transformers, nvidia-ml-py and joulebench's light needs (polars,
jsonschema, pyyaml, psutil, tqdm; no internet, no vLLM, no Snakemake) it synthesizes the
``llama-3.2-1b`` preset (random weights, the real shapes), then sweeps fp32/bf16/fp16 ×
batch 1/8/64 at short lengths and prints, per configuration: prefill and decode J/token by both
methods (subtraction: 1-token window, full − prefill; direct: power trace split at the first
token), decode tokens/s, average power, the idle power measured once before the sweep, and the
trace-vs-counter conservation gap. It stops early, saying so, if the sweep
would pass ``--budget-s`` (default 330 s, under the 6 minutes it must take on an H100).
Where bitsandbytes imports (``pip install .[bnb]``) and the device is CUDA it also runs bnb-int8
and bnb-nf4 (bitsandbytes' defaults: fp32 compute, threshold 6.0) after the other precisions
(within the same budget; ``--precisions bf16`` leaves them more); otherwise it says why not.

    .venv/bin/python tests/perf/gpu_smoke.py                    # on a GPU node
    .venv/bin/python tests/perf/gpu_smoke.py --device cpu --meter estimate --preset tiny-llama \\
        --precisions fp32 --batch-sizes 1 --repetitions 2        # the same path on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from joulebench.energy.meters import make_meter
from joulebench.harness import accounting, phases
from joulebench.harness.engines import make_engine
from joulebench.models.synthetic import synthesize
from joulebench.study.specs import BenchSpec
from perfkit import Figure, OthersCpu, machine_load

#: Target: the whole sweep, on an H100 (the README's run took 235 s).
MAX_TOTAL_S = 360.0
#: The seed study's int8 and int4, run when the machine can.
BNB_PRECISIONS = ("bnb-int8", "bnb-nf4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-3.2-1b")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-window-s", type=float, default=1.0)
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--sample-hz", type=float, default=20.0)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--meter", default="nvml", help="nvml (default), or estimate for a CPU run")
    ap.add_argument("--workdir", type=Path, help="where to write the model (default: a temp dir)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop starting configs after")
    ap.add_argument(
        "--bnb",
        nargs="*",
        default=list(BNB_PRECISIONS),
        help="bitsandbytes variants to add on CUDA where bitsandbytes imports (none: --bnb)",
    )
    return ap.parse_args(argv)


def bnb_precisions(requested: list[str], device: str) -> tuple[list[str], str | None]:
    """The bnb-* variants this machine can run, and why the others are skipped (None: none)."""
    import importlib.util

    if not requested:
        return [], None
    if device != "cuda":
        return [], f"{', '.join(requested)} skipped: bitsandbytes needs a CUDA GPU"
    if importlib.util.find_spec("bitsandbytes") is None:
        return [], (
            f"{', '.join(requested)} skipped: bitsandbytes is not installed (pip install .[bnb])"
        )
    return list(requested), None


def _median(values: list[Any]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over repetitions of what the table shows."""
    by = {p: [r for r in rows if r["phase"] == p] for p in ("prefill", "decode", "full")}

    def per_token(phase: str, key: str) -> float:
        return _median([r[key] / r["tokens"] if r[key] is not None else None for r in by[phase]])

    measured = by["prefill"] + by["full"]
    return {
        "prefill_sub": per_token("prefill", "energy_j"),
        "prefill_direct": per_token("prefill", "direct_energy_j"),
        "decode_sub": per_token("decode", "energy_j"),
        "decode_direct": per_token("decode", "direct_energy_j"),
        "decode_tok_s": _median([r["tokens"] / r["time_s"] for r in by["decode"]]),
        "avg_w": _median([r["energy_j"] / r["time_s"] for r in by["full"]]),
        "conservation": _median([r["conservation_pct"] for r in measured]),
        "worst_conservation": max(
            (abs(r["conservation_pct"]) for r in measured if r["conservation_pct"] is not None),
            default=float("nan"),
        ),
    }


HEADER = (
    f"{'config':<22}{'prefill J/tok':>15}{'(direct)':>10}{'decode J/tok':>14}{'(direct)':>10}"
    f"{'decode tok/s':>13}{'avg W':>8}{'idle W':>8}{'trace-vs-counter %':>20}"
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    t_start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing measured (this script needs one)")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="joulebench-smoke-"))
    model_dir = workdir / args.preset
    if not (model_dir / "config.json").is_file():
        synthesize(model_dir, args.preset)
    params = json.loads((model_dir / "joulebench_source.json").read_text())["parameters"]
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    meter = make_meter(args.meter, args.device, synchronize=sync, sample_hz=args.sample_hz)
    measurement = {
        "warmup_runs": args.warmup,
        "repetitions": args.repetitions,
        "min_window_s": args.min_window_s,
        "cooldown_s": 0.0,
        "seed": 0,
        "idle_s": 0,
    }
    bnb, bnb_skipped = bnb_precisions(args.bnb, args.device)
    sweep = [*args.precisions, *(p for p in bnb if p not in args.precisions)]
    if bnb_skipped:
        print(bnb_skipped)
    lines: list[str] = []
    others = OthersCpu().__enter__()  # ended after the sweep, whatever happens in it
    try:
        idle = phases.measure_idle(meter, args.idle_s)  # once, before any model is loaded
        idle_w = idle.total_j / idle.time_s if idle else float("nan")
        info = meter.describe()
        gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        print(f"{args.preset}: {params / 1e6:,.0f}M parameters (random weights, real shapes)")
        print(f"device {gpu}; meter {meter.source}; power field {info.get('power_fields')};")
        print(f"trace {args.sample_hz:g} Hz; in {args.input_len} / out {args.output_len} tokens;")
        print(f"{args.repetitions} reps (median), windows >= {args.min_window_s:g} s; idle once\n")
        print(HEADER, flush=True)
        stopped = None
        for precision in sweep:
            engine = make_engine("transformers", str(model_dir), precision, args.device)
            engine.load()
            for batch in args.batch_sizes:
                if time.perf_counter() - t_start > args.budget_s:
                    stopped = f"{precision} bs{batch}"
                    break
                spec = BenchSpec(
                    "smoke",
                    args.preset,
                    "transformers",
                    precision,
                    args.device,
                    batch,
                    args.input_len,
                    args.output_len,
                    measurement,
                )
                run = phases.run_phases(engine, meter, spec, progress=False, idle_s=0)
                run.idle = idle
                s = summarize(accounting.account_energy(run, meter.trace()))
                line = (
                    f"{precision + ' bs' + str(batch):<22}{s['prefill_sub']:>15.4g}"
                    f"{s['prefill_direct']:>10.4g}{s['decode_sub']:>14.4g}"
                    f"{s['decode_direct']:>10.4g}{s['decode_tok_s']:>13.5g}{s['avg_w']:>8.1f}"
                    f"{idle_w:>8.1f}{s['conservation']:>+12.2f} (max {s['worst_conservation']:.1f})"
                )
                lines.append(line)
                print(line, flush=True)
            del engine
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
            if stopped:
                break
        info = meter.describe()
    finally:
        meter.close()
    if info.get("power_field_changes"):
        print(f"power field changes during the run: {info['power_field_changes']}")
    others.__exit__()
    print(f"machine: {machine_load(others)}")
    total = Figure("whole sweep", time.perf_counter() - t_start, "s", MAX_TOTAL_S)
    print(f"total {total.value:.0f} s (target {total.target} s)")
    if stopped:
        print(
            f"target missed: stopped before {stopped}, the {args.budget_s:g} s budget was used up"
        )
        return 1
    return 0 if total.met else 1


if __name__ == "__main__":
    sys.exit(main())
