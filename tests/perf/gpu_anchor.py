"""The anchor: J/token of the Llama-3.1-8B shape in bf16 beside ML.ENERGY's published figures.

Reads the study's ``summary.parquet`` and prints, per batch size, joulebench's decode J per
output token (full − prefill, the steady generation) and full-generation J per output token
(prefill included) next to ML.ENERGY benchmark v3's Llama-3.1-8B-Instruct bf16 figures on one
H100 (0.455 J/token at 8 sequences, 0.119 at 64; ../shared/REFERENCE.md). The engines differ:
ML.ENERGY runs vLLM (continuous batching, CUDA graphs, ~390 output tokens of a chat task, a
steady-state window under gamma arrivals); this is Hugging Face transformers ``generate`` on a
fixed batch of random-token prompts (the GPU node has no vLLM). Expect joulebench's figures to be
higher; the table states the ratio rather than a verdict. Writes ``--out`` (csv).

    python tests/perf/gpu_anchor.py --summary results/tables/summary.parquet --out anchor.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

#: ML.ENERGY benchmark v3, Llama-3.1-8B-Instruct, bf16, 1x H100, vLLM (REFERENCE.md).
PUBLISHED_J_PER_TOKEN = {8: 0.455, 64: 0.119}
ENGINE_NOTE = (
    "engines differ: ML.ENERGY = vLLM (continuous batching, CUDA graphs, chat prompts, "
    "~390 output tokens, steady-state window); joulebench here = transformers generate, fixed "
    "batch of random prompts (no vLLM on the GPU node)"
)


def anchor_table(
    summary: pl.DataFrame, model: str, precision: str, batch_sizes: list[int]
) -> pl.DataFrame:
    """One row per batch size: joulebench decode and full J/token beside ML.ENERGY's figure
    (null where it published none)."""
    ours = (
        summary.filter(
            (pl.col("model") == model)
            & (pl.col("precision") == precision)
            & pl.col("phase").is_in(["decode", "full"])
        )
        .select("batch_size", "phase", "j_per_token_mean", "gpu_name")
        .pivot(on="phase", index=["batch_size", "gpu_name"], values="j_per_token_mean")
    )
    published = pl.DataFrame(
        {
            "batch_size": batch_sizes,
            "mlenergy_vllm_h100_j_per_token": [PUBLISHED_J_PER_TOKEN.get(b) for b in batch_sizes],
        },
        schema={"batch_size": pl.Int64, "mlenergy_vllm_h100_j_per_token": pl.Float64},
    )
    return (
        published.join(ours, on="batch_size", how="left")
        .rename({"decode": "joulebench_decode_j_per_token", "full": "joulebench_full_j_per_token"})
        .with_columns(
            ratio_decode=pl.col("joulebench_decode_j_per_token")
            / pl.col("mlenergy_vllm_h100_j_per_token"),
            ratio_full=pl.col("joulebench_full_j_per_token")
            / pl.col("mlenergy_vllm_h100_j_per_token"),
        )
        .sort("batch_size")
    )


def ratio(x: float | None) -> str:
    return f"{x:>7.2f}" if x is not None else f"{'—':>7}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=list(PUBLISHED_J_PER_TOKEN))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    summary = pl.read_parquet(args.summary)
    table = anchor_table(summary, args.model, args.precision, args.batch_sizes)
    tmp = args.out.with_suffix(".tmp")
    table.write_csv(tmp)
    tmp.replace(args.out)
    print(f"anchor: {args.model} {args.precision}, J per output token ({ENGINE_NOTE})")
    print(f"{'batch':>5}{'ML.ENERGY':>11}{'decode':>10}{'x':>7}{'full':>10}{'x':>7}  GPU")
    for r in table.iter_rows(named=True):
        dec, full = r["joulebench_decode_j_per_token"], r["joulebench_full_j_per_token"]
        pub = r["mlenergy_vllm_h100_j_per_token"]
        print(
            f"{r['batch_size']:>5}"
            + (f"{pub:>11.3f}" if pub is not None else f"{'—':>11}")
            + (f"{dec:>10.4g}{ratio(r['ratio_decode'])}" if dec is not None else f"{'missing':>17}")
            + (f"{full:>10.4g}{ratio(r['ratio_full'])}" if full is not None else f"{'missing':>17}")
            + f"  {r['gpu_name']}"
        )
    missing = table.filter(pl.col("joulebench_decode_j_per_token").is_null()).height
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
