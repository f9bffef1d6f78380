"""The seed paper's serving claim, tested on the study's serving experiments: shaping request
arrivals cuts energy per request, against the same arrivals unshaped (claim 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from joulebench.results.stats import RESAMPLES, SEED, Interval, bootstrap_means
from joulebench.results.verdicts import (
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

#: The shaping label of arrivals passed through unshaped (the serving table's ``shaping``).
UNSHAPED = "pass"


def _relative_draws(requests: Mapping[str, np.ndarray], config_id: str) -> tuple[np.ndarray, int]:
    """Bootstrap means of an experiment's per-request energies, relative to their mean: the
    request-to-request spread of its J/request (ones, n=0 where the requests are unknown)."""
    values = requests.get(config_id)
    if values is None or values.size == 0 or values.mean() <= 0:
        return np.ones(RESAMPLES), 0
    return bootstrap_means(values.tolist(), config_id) / values.mean(), int(values.size)


def shaping_finding(
    serving: pl.DataFrame | None,
    requests: Mapping[str, np.ndarray] | None = None,
    confidence: float = 0.95,
) -> Finding:
    """Claim 3: shaping request arrivals cuts energy per request, against unshaped arrivals."""
    title = "Arrival shaping cuts energy per request"
    claim = (
        "How requests arrive at a server (spacing, bursts, batching them on release) changes "
        "energy per request by a large factor — up to 100× in the seed study."
    )
    rule = (
        f"Energy per request (window energy ÷ completed requests, the seed study's way) of "
        f"unshaped arrivals ÷ that of the same arrivals shaped, per model, precision, server "
        f"and offered rate; above 1 the shaped ones were cheaper. Holds if the best shaping "
        f"saves ≥ {MARGIN:.2f}× at every rate, partly holds if at some rates only, does not "
        f"hold if at none. Intervals: percentile bootstrap over the requests of each experiment "
        f"(their attributed energies give the spread of J/request; {RESAMPLES} resamples, seed "
        f"{SEED}); a verdict is given only when the unsettled rates could not change it."
    )
    if serving is None or serving.is_empty():
        return Finding(
            title,
            claim,
            MISSING,
            "this study has no serving experiment (add a `serving:` section)",
            rule,
        )
    requests = requests or {}
    energy = pl.col("j_per_request_window")
    keys = ["model", "precision", "server", "offered_rate"]
    pair = [*keys, "process"]
    measured = serving.filter(energy.is_not_null() & (energy > 0))
    base = measured.filter(shaping=UNSHAPED).select(
        *pair, unshaped="pattern", unshaped_j=energy, unshaped_id="config_id"
    )
    shaped = measured.filter(pl.col("shaping") != UNSHAPED).join(
        base, on=pair, how="inner", nulls_equal=True
    )
    if shaped.is_empty():
        return Finding(
            title,
            claim,
            MISSING,
            "needs unshaped and shaped arrivals of the same process at one rate",
            rule,
        )
    rows: list[dict[str, Any]] = []
    deciding: list[Deciding] = []
    conditions: dict[str, bool | None] = {}
    no_spread = False
    for key, group in shaped.sort(keys).group_by(keys, maintain_order=True):
        all_draws, estimates, counts = [], [], []
        for r in group.iter_rows(named=True):
            rel_u, n_u = _relative_draws(requests, r["unshaped_id"])
            rel_s, n_s = _relative_draws(requests, r["config_id"])
            no_spread |= not (n_u and n_s)
            est = r["unshaped_j"] / r["j_per_request_window"]
            d = est * rel_u / rel_s
            iv = Interval.from_draws(est, d, min(n_u, n_s), confidence)
            all_draws.append(d)
            estimates.append(est)
            counts.append(iv.reps)
            rows.append(
                {k: r[k] for k in keys}
                | {
                    "shaped": r["pattern"],
                    "unshaped": r["unshaped"],
                    "shaped_j_per_request": round(r["j_per_request_window"], 4),
                    "unshaped_j_per_request": round(r["unshaped_j"], 4),
                    "saving_x": round(iv.estimate, 3),
                    "ci_low": round(iv.low, 3),
                    "ci_high": round(iv.high, 3),
                    "requests": iv.reps,
                    "cheaper": f"shaped ({r['pattern']})"
                    if est > 1
                    else f"unshaped ({r['unshaped']})",
                }
            )
        iv = Interval.from_draws(
            max(estimates), np.max(np.vstack(all_draws), axis=0), min(counts), confidence
        )
        label = "/".join(str(k) for k in key[:3]) + f" at {key[3]:g} req/s"
        deciding.append(Deciding(f"best shaping saving, {label}", iv, MARGIN, "requests"))
        conditions[label] = iv.versus(MARGIN)
    verdict, possible = decide(
        conditions,
        lambda c: HOLDS if all(c.values()) else PARTLY if any(c.values()) else FAILS,
    )
    table = pl.DataFrame(rows, infer_schema_length=None)
    cheaper_unshaped = table.filter(pl.col("cheaper").str.starts_with("unshaped"))
    text = "; ".join(f"{d.name}: {d.interval.text()}" for d in deciding) + "."
    if cheaper_unshaped.height:
        at = ", ".join(f"{r:g}" for r in cheaper_unshaped["offered_rate"].unique().sort())
        text += f" Unshaped arrivals were the cheaper ones at {at} req/s."
    text += unsettled_text(verdict, possible, deciding, "requests per experiment")
    notes = [
        "each pattern and rate is one experiment: its interval covers the spread between "
        "requests within the run, not the variation from one run to the next (repeat the "
        "serving session to see that)"
    ]
    if no_spread:
        notes.append("some experiments have no per-request table: their intervals show no spread")
    return Finding(title, claim, verdict, text, rule, table, notes, deciding)
