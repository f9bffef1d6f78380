"""The seed paper's offline claims, tested on the study's repetitions: lower precision saves
energy only when compute-bound (claim 1), and batching cuts energy per token, most in decode
(claim 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from joulebench.results.derived import COMPARABLE
from joulebench.results.stats import Interval, bootstrap_means
from joulebench.results.verdicts import (
    CI_RULE,
    FAILS,
    HOLDS,
    MARGIN,
    MISSING,
    PARTLY,
    Deciding,
    Finding,
    decide,
    unsettled_text,
)


class Draws:
    """Bootstrap means of each configuration's repetitions, drawn once per configuration."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, row: Mapping[str, Any], values_col: str = "j") -> np.ndarray:
        key = "|".join(f"{k}={row[k]}" for k in self.keys)
        if key not in self.cache:
            self.cache[key] = bootstrap_means(row[values_col], key)
        return self.cache[key]


#: What identifies one configuration in the tidy table.
CONFIG_KEYS = [*COMPARABLE, "precision", "batch_size"]


def repetitions(tidy: pl.DataFrame) -> pl.DataFrame:
    """Per configuration and phase (prefill, decode): its J/token repetitions, mean and count."""
    j = pl.col("j_per_token")
    return (
        tidy.filter(pl.col("phase").is_in(["prefill", "decode"]), j.is_not_null() & j.is_finite())
        .group_by(CONFIG_KEYS)
        .agg(j=j.sort(), mean=j.mean(), n=pl.len())  # sorted: row order changes no draw
        .sort(CONFIG_KEYS, nulls_last=True)
    )


def precision_finding(
    tidy: pl.DataFrame, reference: str = "fp32", confidence: float = 0.95
) -> Finding:
    """Claim 1: lower precision saves energy only when compute-bound."""
    title = "Lower precision saves energy only when compute-bound"
    claim = (
        "Reducing precision (fp32 → bf16/fp16/int8) lowers energy per token when the work "
        "is compute-bound (large batch × prompt, prefill), not when it is memory-bound "
        "(small-batch decode)."
    )
    rule = (
        f"For each point (phase, batch, lengths) the saving of a precision is J/token of "
        f"{reference} ÷ its J/token, and the precision with the least J/token won the point. "
        f"Compute-bound point: prefill at the largest batch × input length; memory-bound point: "
        f"decode at the smallest batch. Holds if the best lower precision saves ≥ "
        f"{MARGIN:.2f}× at the compute-bound point and less than that at the memory-bound "
        f"point; partly holds if it saves ≥ {MARGIN:.2f}× at both but more when compute-bound "
        f"(their quotient above 1); otherwise it does not hold. {CI_RULE}"
    )
    data = repetitions(tidy)
    point_keys = [*COMPARABLE, "batch_size"]
    ref = data.filter(precision=reference)
    low = data.filter(pl.col("precision") != reference).join(
        ref.select(*point_keys, ref_j="j", ref_mean="mean", ref_n="n"),
        on=point_keys,
        nulls_equal=True,
    )
    if low.is_empty():
        return Finding(
            title,
            claim,
            MISSING,
            f"needs {reference} and at least one lower precision measured at the same points",
            rule,
        )
    draws = Draws(CONFIG_KEYS)
    rows: list[dict[str, Any]] = []
    best: dict[tuple[Any, ...], tuple[float, np.ndarray, int]] = {}
    for point, group in low.group_by(point_keys, maintain_order=True):
        first = group.row(0, named=True)
        ref_draws = draws(first | {"precision": reference}, "ref_j")
        everyone = {reference: first["ref_mean"]} | dict(
            zip(group["precision"], group["mean"], strict=True)
        )
        winner = min(everyone, key=lambda p: everyone[p])
        all_draws, estimates, reps = [], [], []
        for r in group.iter_rows(named=True):
            d = ref_draws / draws(r)
            est = r["ref_mean"] / r["mean"]
            iv = Interval.from_draws(est, d, min(r["n"], r["ref_n"]), confidence)
            all_draws.append(d)
            estimates.append(est)
            reps.append(iv.reps)
            rows.append(
                {k: r[k] for k in point_keys}
                | {
                    "precision": r["precision"],
                    "saving_x": round(iv.estimate, 3),
                    "ci_low": round(iv.low, 3),
                    "ci_high": round(iv.high, 3),
                    "n": iv.reps,
                    "winner": winner,
                }
            )
        best[point] = (max(estimates), np.max(np.vstack(all_draws), axis=0), min(reps))
    table = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        work=pl.col("batch_size")
        * pl.when(pl.col("phase") == "prefill").then(pl.col("input_len")).otherwise(1)
    )
    prefill = table.filter(phase="prefill").sort("work", maintain_order=True)
    decode = table.filter(phase="decode").sort("work", maintain_order=True)
    if prefill.is_empty() or decode.is_empty():
        return Finding(title, claim, MISSING, "needs both prefill and decode points", rule)
    cb_row, mb_row = prefill.row(-1, named=True), decode.row(0, named=True)
    cb_est, cb_draws, cb_n = best[tuple(cb_row[k] for k in point_keys)]
    mb_est, mb_draws, mb_n = best[tuple(mb_row[k] for k in point_keys)]
    cb = Interval.from_draws(cb_est, cb_draws, cb_n, confidence)
    mb = Interval.from_draws(mb_est, mb_draws, mb_n, confidence)
    quotient = Interval.from_draws(
        cb_est / mb_est, cb_draws / mb_draws, min(cb_n, mb_n), confidence
    )
    deciding = [
        Deciding("best saving at the compute-bound point", cb, MARGIN),
        Deciding("best saving at the memory-bound point", mb, MARGIN),
        Deciding("compute-bound ÷ memory-bound saving", quotient, 1.0),
    ]
    verdict, possible = decide(
        {"cb": cb.versus(MARGIN), "mb": mb.versus(MARGIN), "more": quotient.versus(1.0)},
        lambda c: (
            HOLDS
            if c["cb"] and not c["mb"]
            else PARTLY
            if c["cb"] and c["mb"] and c["more"]
            else FAILS
        ),
    )
    cb_point = f"prefill bs {cb_row['batch_size']} in {cb_row['input_len']}"
    mb_point = f"decode bs {mb_row['batch_size']}"
    text = (
        f"Best lower precision saves {cb.text()} at the most compute-bound point ({cb_point}, "
        f"won by {cb_row['winner']}) and {mb.text()} at the most memory-bound point "
        f"({mb_point}, won by {mb_row['winner']})."
    ) + unsettled_text(verdict, possible, deciding, "repetitions per configuration")
    marks = {
        tuple(cb_row[k] for k in point_keys): "compute-bound",
        tuple(mb_row[k] for k in point_keys): "memory-bound",
    }
    table = table.with_columns(
        point=pl.Series(
            [marks.get(tuple(r[k] for k in point_keys), "") for r in table.iter_rows(named=True)],
            dtype=pl.String,
        )
    ).select(
        "model",
        "engine",
        "phase",
        "batch_size",
        "input_len",
        "output_len",
        "precision",
        "saving_x",
        "ci_low",
        "ci_high",
        "n",
        "winner",
        "point",
    )
    return Finding(title, claim, verdict, text, rule, table, deciding=deciding)


def batching_finding(tidy: pl.DataFrame, confidence: float = 0.95) -> Finding:
    """Claim 2: batching cuts energy per token, more in decode than in prefill."""
    title = "Batching cuts energy per token, most in decode"
    claim = (
        "Larger batches lower energy per token, and the gain is larger in memory-bound "
        "decoding than in prefill."
    )
    rule = (
        f"For each (model, engine, precision, lengths) the gain is J/token at the smallest "
        f"batch ÷ J/token at the largest, per phase, and the batch with the least J/token won; "
        f"medians over groups. Holds if the decode gain is ≥ {MARGIN:.2f}× and larger than the "
        f"prefill gain (their quotient above 1); partly holds if both phases gain ≥ "
        f"{MARGIN:.2f}× but prefill gains as much or more; otherwise it does not hold. {CI_RULE}"
    )
    data = repetitions(tidy)
    group_keys = [*COMPARABLE, "precision"]
    draws = Draws(CONFIG_KEYS)
    rows: list[dict[str, Any]] = []
    per_phase: dict[str, list[tuple[float, np.ndarray, int]]] = {"prefill": [], "decode": []}
    for _, group in data.sort("batch_size").group_by(group_keys, maintain_order=True):
        if group.height < 2:
            continue
        small, large = group.row(0, named=True), group.row(-1, named=True)
        cheapest = group.sort("mean")["batch_size"][0]
        d = draws(small) / draws(large)
        iv = Interval.from_draws(
            small["mean"] / large["mean"], d, min(small["n"], large["n"]), confidence
        )
        per_phase[small["phase"]].append((iv.estimate, d, iv.reps))
        rows.append(
            {k: small[k] for k in group_keys}
            | {
                "batch_min": small["batch_size"],
                "batch_max": large["batch_size"],
                "gain_x": round(iv.estimate, 3),
                "ci_low": round(iv.low, 3),
                "ci_high": round(iv.high, 3),
                "n": iv.reps,
                "cheapest_batch": cheapest,
            }
        )
    if not rows:
        return Finding(title, claim, MISSING, "needs at least two batch sizes", rule)
    if not per_phase["prefill"] or not per_phase["decode"]:
        return Finding(title, claim, MISSING, "needs both prefill and decode points", rule)
    med: dict[str, tuple[Interval, np.ndarray]] = {}
    for phase, gains in per_phase.items():
        stack = np.vstack([g[1] for g in gains])
        est = float(np.median([g[0] for g in gains]))
        draws_med = np.median(stack, axis=0)
        med[phase] = (
            Interval.from_draws(est, draws_med, min(g[2] for g in gains), confidence),
            draws_med,
        )
    dec, pre = med["decode"][0], med["prefill"][0]
    quotient = Interval.from_draws(
        dec.estimate / pre.estimate,
        med["decode"][1] / med["prefill"][1],
        min(dec.reps, pre.reps),
        confidence,
    )
    deciding = [
        Deciding("median decode gain", dec, MARGIN),
        Deciding("median prefill gain", pre, MARGIN),
        Deciding("decode ÷ prefill gain", quotient, 1.0),
    ]
    verdict, possible = decide(
        {"dec": dec.versus(MARGIN), "pre": pre.versus(MARGIN), "more": quotient.versus(1.0)},
        lambda c: HOLDS if c["dec"] and c["more"] else PARTLY if c["dec"] and c["pre"] else FAILS,
    )
    table = pl.DataFrame(rows, infer_schema_length=None).sort("model", "precision", "phase")
    won_small = table.filter(pl.col("cheapest_batch") == pl.col("batch_min")).height
    text = (
        f"From the smallest to the largest batch, energy per token falls {dec.text()} in "
        f"decode and {pre.text()} in prefill (medians over {len(per_phase['decode'])} and "
        f"{len(per_phase['prefill'])} groups); the smallest batch was the cheapest in "
        f"{won_small} of {table.height} groups."
    ) + unsettled_text(verdict, possible, deciding, "repetitions per configuration")
    table = table.select(
        "model",
        "engine",
        "precision",
        "phase",
        "input_len",
        "output_len",
        "batch_min",
        "batch_max",
        "gain_x",
        "ci_low",
        "ci_high",
        "n",
        "cheapest_batch",
    )
    return Finding(title, claim, verdict, text, rule, table, deciding=deciding)
