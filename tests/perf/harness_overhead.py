"""Harness overhead: tokens/s through joulebench's engine + meter vs a bare generate loop.

Both run in this process on the same tiny model, batch and prompts, interleaved in rounds so that
drift in machine speed hits both alike. Prints a table and the ratio (target ≥ 0.98).

    .venv/bin/python tests/perf/harness_overhead.py [--rounds 7] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from joulebench import bench
from joulebench.config import BenchSpec
from joulebench.engines import make_engine
from joulebench.meters import make_meter
from joulebench.models import synthesize
from transformers import AutoModelForCausalLM, GenerationConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    b, n_in, n_out = args.batch_size, args.input_len, args.output_len

    model_dir = Path(tempfile.mkdtemp()) / "tiny-llama"
    synthesize(model_dir, "tiny-llama")

    engine = make_engine("transformers", str(model_dir), args.precision, "cpu")
    engine.load()
    meter = make_meter("auto", "cpu", sample_hz=20)  # with the power trace, as the study runs
    spec = BenchSpec(
        "perf",
        "tiny-llama",
        "transformers",
        args.precision,
        "cpu",
        b,
        n_in,
        n_out,
        {
            "warmup_runs": 0,
            "repetitions": 1,
            "min_window_s": 0.0,
            "cooldown_s": 0.0,
            "seed": 0,
            "idle_s": 0,
        },
    )

    bare = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, engine.precision.dtype)
    ).eval()
    inputs = engine.make_inputs(b, n_in, 0)
    gen = GenerationConfig(
        do_sample=False,
        max_new_tokens=n_out,
        min_new_tokens=n_out,
        pad_token_id=engine.tokenizer.pad_token_id,
        eos_token_id=engine.tokenizer.eos_token_id,
    )

    def bare_generate() -> None:
        with torch.inference_mode():
            bare.generate(**inputs, generation_config=gen)

    for _ in range(2):  # warm both
        bare_generate()
        engine.generate(inputs, n_out)

    rates_jb: list[float] = []
    rates_bare: list[float] = []

    def run_bare() -> None:
        t = time.perf_counter()
        bare_generate()
        rates_bare.append(b * n_out / (time.perf_counter() - t))

    def run_joulebench() -> None:
        rows = bench.run_phases(engine, meter, spec, progress=False).rows
        full = next(r for r in rows if r["phase"] == "full")
        rates_jb.append(full["tokens"] / full["time_s"])

    for i in range(args.rounds):  # alternate the order so neither path always runs first
        for step in (run_bare, run_joulebench) if i % 2 == 0 else (run_joulebench, run_bare):
            step()

    med_jb, med_bare = statistics.median(rates_jb), statistics.median(rates_bare)
    print(
        f"tiny-llama {args.precision}, batch {b}, in {n_in}, out {n_out}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds (median tokens/s)"
    )
    print(f"{'path':<28}{'tokens/s':>12}{'min':>10}{'max':>10}")
    print(
        f"{'bare transformers generate':<28}{med_bare:>12.1f}{min(rates_bare):>10.1f}"
        f"{max(rates_bare):>10.1f}"
    )
    print(
        f"{'joulebench engine + meter':<28}{med_jb:>12.1f}{min(rates_jb):>10.1f}"
        f"{max(rates_jb):>10.1f}"
    )
    paired = sorted(j / b for j, b in zip(rates_jb, rates_bare, strict=True))
    q1, q3 = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
    print(f"ratio of medians joulebench / bare: {med_jb / med_bare:.3f}")
    print(
        f"median of paired per-round ratios:  {statistics.median(paired):.3f} "
        f"(IQR {q1:.3f}-{q3:.3f})  target >= 0.98"
    )


if __name__ == "__main__":
    main()
