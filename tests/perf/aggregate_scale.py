"""Aggregation at scale: 100,000 synthetic records through the tidy table, summary, derived
columns and long table, and 10 million power-trace samples written, read and integrated over
every measured window. Prints time and peak memory per step, one table, and exits 1 when
the whole takes longer than ``--max-seconds`` or more memory than ``--max-rss-mib``.

    .venv/bin/python tests/perf/aggregate_scale.py [--records 100000] [--reps 5] [--samples 1e7]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from joulebench.energy.trace import PowerTrace
from joulebench.results import analysis, derived
from perfkit import Figure, OthersCpu, report

PRECISIONS = ("fp32", "fp16", "bf16", "cpu-int8")
#: Targets for the defaults (100k records, 10M samples): what a study of that size may cost.
MAX_SECONDS = 120.0
MAX_RSS_MIB = 8192.0
ANALYSIS = {
    "baseline": {"precision": "fp32", "batch_size": 1},
    "grid_intensity_g_per_kwh": 400.0,
    "price_per_kwh": 0.15,
    "price_per_device_hour": 2.0,
    "currency": "USD",
}


def synthetic_record(i: int, reps: int, rng: random.Random) -> dict[str, Any]:
    """A record shaped like bench.run's, with plausible random numbers."""
    batch, n_in, n_out = 2 ** (i % 8), 64 * (1 + i % 4), 128
    runs = []
    for rep in range(reps):
        pt, pe = rng.uniform(0.01, 0.1), rng.uniform(1, 10)
        ft, fe = pt + rng.uniform(1, 5), pe + rng.uniform(50, 500)
        for phase, t, e, tok, ti, to in (
            ("prefill", pt, pe, batch * n_in, batch * n_in, batch),
            ("full", ft, fe, batch * n_out, batch * n_in, batch * n_out),
            ("decode", ft - pt, fe - pe, batch * (n_out - 1), 0, batch * (n_out - 1)),
        ):
            runs.append(
                {
                    "rep": rep,
                    "phase": phase,
                    "method": "measured",
                    "time_s": t,
                    "energy_j": e,
                    "tokens": tok,
                    "input_tokens": ti,
                    "output_tokens": to,
                    "window_repeats": 1,
                }
            )
    precision = PRECISIONS[(i // 8) % 4]
    cfg = {
        "study": "scale",
        "model": f"m{i % 10}",
        "engine": "transformers",
        "precision": precision,
        "device": "cuda",
        "batch_size": batch,
        "input_len": n_in,
        "output_len": n_out,
    }
    return {
        "status": "ok",
        "config": cfg,
        "config_id": f"cfg{i}",
        "config_hash": f"{i:016x}",
        "engine": {"device": "cuda"},
        "meter": {"source": "nvml"},
        "memory": {"bytes": 10**9, "kind": "cuda_max_allocated"},
        "runs": runs,
        "provenance": {
            "host": {"hostname": f"node{i % 16}"},
            "torch": {"gpus": ["H100"]},
            "joulebench_version": "0.1.0",
            "git": {"commit": "abc"},
            "packages": {"torch": "2.13.0"},
        },
    }


def step(name: str, fn: Callable[[], Any], table: list[tuple[str, float, float, str]]) -> Any:
    start = time.perf_counter()
    out = fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shape = f"{out.height:,} × {out.width}" if hasattr(out, "height") else f"{len(out):,}"
    table.append((name, time.perf_counter() - start, peak, shape))
    return out


def run_steps(args: argparse.Namespace) -> list[tuple[str, float, float, str]]:
    """Every step, timed: (name, seconds, peak RSS MiB so far, rows × columns)."""
    rng = random.Random(0)
    table: list[tuple[str, float, float, str]] = []
    records = step(
        "make records",
        lambda: [synthetic_record(i, args.reps, rng) for i in range(args.records)],
        table,
    )
    tidy = step("tidy table", lambda: analysis.measurements(records), table)
    summary = step("summary + 95% CI", lambda: analysis.summarize(tidy), table)
    step("derived columns", lambda: derived.enrich(summary, ANALYSIS), table)
    step("long table", lambda: derived.long_table(tidy), table)

    n = int(args.samples)  # one GPU sampled at 20 Hz, instant power around 400 W
    t = np.arange(n) / 20.0
    power = 400 + 250 * np.sin(t / 7.0) + np.random.default_rng(0).normal(0, 5, n)
    samples = step(
        "make 10M-sample trace",
        lambda: pl.DataFrame(
            {
                "t_s": t,
                "device": "cuda:0",
                "source": "nvml",
                "power_w": power,
                "power_field": "instant",
                "interpolation": "instant",
            }
        ),
        table,
    )
    path = Path(tempfile.mkdtemp()) / "trace.parquet"
    step("write trace parquet", lambda: PowerTrace(samples).save(path) or samples, table)
    trace = step("read trace parquet", lambda: PowerTrace.load(path).samples, table)
    windows = tidy.filter(pl.col("phase") != "decode").height  # every measured window
    starts = np.sort(np.random.default_rng(1).uniform(0, t[-1] - 10, windows))
    step(
        f"integrate {windows:,} windows",
        lambda: PowerTrace(trace).energy(starts, starts + 5.0)["cuda:0"],
        table,
    )
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--samples", type=float, default=1e7)
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="target: all steps")
    ap.add_argument("--max-rss-mib", type=float, default=MAX_RSS_MIB, help="target: peak RSS")
    args = ap.parse_args()
    with OthersCpu() as others:
        table = run_steps(args)
    total_s = sum(seconds for _, seconds, _, _ in table)
    peak_mib = max(peak for _, _, peak, _ in table)
    figures = [Figure(f"{name} ({shape})", seconds, "s") for name, seconds, _, shape in table]
    figures += [
        Figure("every step", total_s, "s", args.max_seconds),
        Figure("peak RSS", peak_mib, "MiB", args.max_rss_mib),
    ]
    title = (
        f"{args.records:,} records × {args.reps} repetitions × 3 phases; "
        f"{int(args.samples):,} trace samples"
    )
    return report(title, figures, others)


if __name__ == "__main__":
    sys.exit(main())
