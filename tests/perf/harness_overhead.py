"""Harness overhead: tokens/s through joulebench's engine + meter vs a bare generate loop.

Both run in this process on the same tiny model, batch and prompts, interleaved in rounds so that
drift in machine speed hits both alike. Prints one table with the ratio (target ≥ 0.98) and
exits 1 when it is missed.

    .venv/bin/python tests/perf/harness_overhead.py [--rounds 7] [--batch-size 8]
    .venv-vllm/bin/python tests/perf/harness_overhead.py --engine vllm

With ``--engine vllm`` the bare path is ``vllm.LLM.generate`` on the same token-id prompts with
the same SamplingParams, on the very LLM instance the joulebench engine built (one model in
memory; identical engine arguments), and the joulebench path is the harness's full-generation
window (streamed step loop that marks the first token, inside a meter window with the trace on).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from joulebench.energy.meters import make_meter
from joulebench.harness import phases
from joulebench.harness.engines import EngineOptions, make_engine
from joulebench.models.synthetic import synthesize
from joulebench.study.specs import BenchSpec
from perfkit import Figure, OthersCpu, report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: the engine's default)")
    args = ap.parse_args()
    b, n_in, n_out = args.batch_size, args.input_len, args.output_len

    model_dir = Path(tempfile.mkdtemp()) / "tiny-llama"
    synthesize(model_dir, "tiny-llama")

    options = EngineOptions(batch_size=b, max_model_len=n_in + n_out)
    engine = make_engine(
        args.engine, str(model_dir), args.precision, "cpu", args.threads, options=options
    )
    engine.load()
    meter = make_meter("auto", "cpu", sample_hz=20)  # with the power trace, as the study runs
    spec = BenchSpec(
        "perf",
        "tiny-llama",
        args.engine,
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

    inputs = engine.make_inputs(b, n_in, 0)
    bare_generate = (
        bare_transformers(model_dir, engine, inputs, n_out)
        if args.engine == "transformers"
        else bare_vllm(engine, inputs, n_out)
    )

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
        rows = phases.run_phases(engine, meter, spec, progress=False).rows
        full = next(r for r in rows if r["phase"] == "full")
        rates_jb.append(full["tokens"] / full["time_s"])

    with OthersCpu() as others:
        for i in range(args.rounds):  # alternate the order so neither path always runs first
            for step in (run_bare, run_joulebench) if i % 2 == 0 else (run_joulebench, run_bare):
                step()

    med_jb, med_bare = statistics.median(rates_jb), statistics.median(rates_bare)
    paired = sorted(j / b for j, b in zip(rates_jb, rates_bare, strict=True))
    title = (
        f"{args.engine}: tiny-llama {args.precision}, batch {b}, in {n_in}, out {n_out}, "
        f"{args.threads or torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    figures = [
        Figure(f"bare {args.engine} generate (median)", med_bare, "tokens/s"),
        Figure("joulebench engine + meter (median)", med_jb, "tokens/s"),
        Figure("median of paired per-round ratios", statistics.median(paired), "ratio"),
        Figure("ratio of medians joulebench / bare", med_jb / med_bare, "ratio", 0.98, False),
    ]
    return report(title, figures, others)


def bare_transformers(model_dir: Path, engine: Any, inputs: Any, n_out: int) -> Callable[[], None]:
    """A plain transformers model and generate call, loaded beside the engine's."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    bare = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, engine.precision.dtype)
    ).eval()
    gen = GenerationConfig(
        do_sample=False,
        max_new_tokens=n_out,
        min_new_tokens=n_out,
        pad_token_id=engine.tokenizer.pad_token_id,
        eos_token_id=engine.tokenizer.eos_token_id,
    )

    def generate() -> None:
        with torch.inference_mode():
            bare.generate(**inputs, generation_config=gen)

    return generate


def bare_vllm(engine: Any, inputs: Any, n_out: int) -> Callable[[], None]:
    """``LLM.generate`` as a user would call it, on the engine's LLM instance."""
    from vllm import SamplingParams

    params = SamplingParams(
        max_tokens=n_out, min_tokens=n_out, ignore_eos=True, temperature=0.0, detokenize=False
    )

    def generate() -> None:
        engine.llm.generate(inputs, params, use_tqdm=False)

    return generate


if __name__ == "__main__":
    sys.exit(main())
