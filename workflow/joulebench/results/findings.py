"""The findings report: each claim of the seed paper, tested on the user's own data.

Verdicts are computed from the repetitions with the rules stated next to them. Every deciding
ratio carries a seeded bootstrap confidence interval; a verdict is given only when every way the
unsettled intervals could fall gives the same one, else it is "inconclusive", with the
repetitions that would likely settle it. Where a study lacks the data a claim needs, the report
says so instead of guessing.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from joulebench.results.derived import COMPARABLE
from joulebench.results.stats import MAX_REPS, RESAMPLES, SEED, Interval, bootstrap_means

#: A difference smaller than this factor is treated as no difference (noise, estimate).
MARGIN = 1.10

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly holds", "does not hold", "missing data"
INCONCLUSIVE = "inconclusive"

#: How the intervals are made, said in every rule.
CI_RULE = (
    f"Intervals: percentile bootstrap over repetitions ({RESAMPLES} resamples, seed {SEED}, "
    f"each configuration resampled on its own); a condition counts only when its interval lies "
    f"wholly on one side of its threshold, and the verdict is inconclusive when the unsettled "
    f"conditions could still change it."
)


@dataclass(frozen=True)
class Deciding:
    """One ratio a verdict rests on: its interval and the threshold it is read against."""

    name: str
    interval: Interval
    threshold: float
    unit: str = "repetitions"

    @property
    def reading(self) -> str:
        side = self.interval.versus(self.threshold)
        if side is not None:
            return "above" if side else "below"
        need = self.interval.reps_to_settle(self.threshold)
        more = f"> {MAX_REPS}" if need is None or need > MAX_REPS else f"~{need}"
        return f"straddles ({more} {self.unit} to settle)"


@dataclass
class Finding:
    """One claim, its computed verdict, and the numbers behind it."""

    title: str
    claim: str
    verdict: str
    summary: str
    rule: str
    table: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    deciding: list[Deciding] = field(default_factory=list)

    def deciding_table(self) -> pl.DataFrame:
        """The deciding ratios as the report shows them (and as the tables behind it carry)."""
        return pl.DataFrame(
            {
                "deciding ratio": [d.name for d in self.deciding],
                "estimate_x": [round(d.interval.estimate, 3) for d in self.deciding],
                "ci_low": [round(d.interval.low, 3) for d in self.deciding],
                "ci_high": [round(d.interval.high, 3) for d in self.deciding],
                "n": [d.interval.reps for d in self.deciding],
                "threshold_x": [d.threshold for d in self.deciding],
                "reading": [d.reading for d in self.deciding],
            },
            schema_overrides={"threshold_x": pl.Float64},
        )


def _ok(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.filter(pl.col("j_per_token_mean").is_not_null(), status="ok")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def decide(
    conditions: Mapping[str, bool | None], rule: Callable[[Mapping[str, bool]], str]
) -> tuple[str, set[str]]:
    """The verdict ``rule`` gives, if every way the unsettled (None) conditions could fall gives
    the same one; else INCONCLUSIVE. Also returns the verdicts still possible."""
    unknown = [k for k, v in conditions.items() if v is None]
    if len(unknown) > 12:
        return INCONCLUSIVE, set()
    possible = {
        rule({**conditions, **dict(zip(unknown, values, strict=True))})  # type: ignore[dict-item]
        for values in itertools.product((True, False), repeat=len(unknown))
    }
    return (next(iter(possible)) if len(possible) == 1 else INCONCLUSIVE), possible


def _unsettled_text(verdict: str, possible: set[str], deciding: list[Deciding], unit: str) -> str:
    """Why a verdict is inconclusive, and what would likely settle it (``unit``: what is
    repeated, e.g. "repetitions per configuration")."""
    if verdict != INCONCLUSIVE:
        return ""
    straddling = [d for d in deciding if d.interval.versus(d.threshold) is None]
    need = max(d.interval.reps_to_settle(d.threshold) or MAX_REPS + 1 for d in straddling)
    now = min(d.interval.reps for d in straddling)
    more = f"more than {MAX_REPS}" if need > MAX_REPS else f"about {need}"
    names = "; ".join(f"{d.name} {d.interval.text()}" for d in straddling)
    could = " or ".join(f"“{v}”" for v in sorted(possible)) or "any verdict"
    return (
        f" Inconclusive: it could still be {could}. Straddling its threshold: {names}. "
        f"{more.capitalize()} {unit} (now {now}) would likely settle it."
    )


class _Draws:
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


def _interval(estimate: float, draws: np.ndarray, reps: int, confidence: float) -> Interval:
    return Interval.from_draws(estimate, draws, reps, confidence)


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
    draws = _Draws(CONFIG_KEYS)
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
            iv = _interval(est, d, min(r["n"], r["ref_n"]), confidence)
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
    cb = _interval(cb_est, cb_draws, cb_n, confidence)
    mb = _interval(mb_est, mb_draws, mb_n, confidence)
    quotient = _interval(cb_est / mb_est, cb_draws / mb_draws, min(cb_n, mb_n), confidence)
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
    ) + _unsettled_text(verdict, possible, deciding, "repetitions per configuration")
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
    draws = _Draws(CONFIG_KEYS)
    rows: list[dict[str, Any]] = []
    per_phase: dict[str, list[tuple[float, np.ndarray, int]]] = {"prefill": [], "decode": []}
    for _, group in data.sort("batch_size").group_by(group_keys, maintain_order=True):
        if group.height < 2:
            continue
        small, large = group.row(0, named=True), group.row(-1, named=True)
        cheapest = group.sort("mean")["batch_size"][0]
        d = draws(small) / draws(large)
        iv = _interval(small["mean"] / large["mean"], d, min(small["n"], large["n"]), confidence)
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
            _interval(est, draws_med, min(g[2] for g in gains), confidence),
            draws_med,
        )
    dec, pre = med["decode"][0], med["prefill"][0]
    quotient = _interval(
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
    ) + _unsettled_text(verdict, possible, deciding, "repetitions per configuration")
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


#: The shaping label of arrivals passed through unshaped (the serving table's ``shaping``).
UNSHAPED = "pass"


def request_energies(serving: pl.DataFrame, directory: Path) -> dict[str, np.ndarray]:
    """Per serving experiment: each completed request's attributed energy (J, the shares scaled
    to the meter's window, ``energy_attributed_scaled_j``), read from the per-request table
    beside its record (``directory``/config_id.parquet); absent ones skipped."""
    out: dict[str, np.ndarray] = {}
    column = "energy_attributed_scaled_j"
    for config_id in serving["config_id"].unique().to_list():
        path = directory / f"{config_id}.parquet"
        if path.is_file():
            table = pl.read_parquet(path, columns=["status", column])
            values = table.filter(status="ok")[column].drop_nulls().to_numpy()
            if values.size:
                out[config_id] = values
    return out


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
            iv = _interval(est, d, min(n_u, n_s), confidence)
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
        iv = _interval(
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
    text += _unsettled_text(verdict, possible, deciding, "requests per experiment")
    notes = [
        "each pattern and rate is one experiment: its interval covers the spread between "
        "requests within the run, not the variation from one run to the next (repeat the "
        "serving session to see that)"
    ]
    if no_spread:
        notes.append("some experiments have no per-request table: their intervals show no spread")
    return Finding(title, claim, verdict, text, rule, table, notes, deciding)


def latency_table(tidy: pl.DataFrame) -> pl.DataFrame:
    """Per configuration: TTFT (prefill window) and end-to-end (full window) p50/p99, seconds."""
    pivot = (
        tidy.filter(pl.col("phase").is_in(["prefill", "full"]))
        .group_by("config_id", "phase")
        .agg(p50=pl.col("time_s").median(), p99=pl.col("time_s").quantile(0.99, "linear"))
    )
    ttft = pivot.filter(phase="prefill").select("config_id", ttft_p50_s="p50", ttft_p99_s="p99")
    e2e = pivot.filter(phase="full").select("config_id", e2e_p50_s="p50", e2e_p99_s="p99")
    return ttft.join(e2e, on="config_id")


#: SLO keys of the config → latency columns of the serving table.
SERVING_LATENCY = {
    "ttft_p50_s": "ttft_s_p50",
    "ttft_p99_s": "ttft_s_p99",
    "e2e_p50_s": "e2e_s_p50",
    "e2e_p99_s": "e2e_s_p99",
}


def _meets(slo: dict[str, float], columns: dict[str, str] | None = None) -> pl.Expr:
    meets = pl.lit(True)
    for key, limit in slo.items():
        meets = meets & (pl.col((columns or {}).get(key, key)) <= limit)
    return meets


def _offline_best(
    summary: pl.DataFrame, tidy: pl.DataFrame, slo: dict[str, float], baseline: dict[str, Any]
) -> pl.DataFrame:
    """Per model and workload: the offline configuration (precision × batch × engine)."""
    full = _ok(summary).filter(phase="full").join(latency_table(tidy), on="config_id")
    work = ["model", "engine", "input_len", "output_len"]
    base = full.filter(precision=baseline["precision"], batch_size=baseline["batch_size"]).select(
        *work, base_j=pl.col("j_per_request_mean")
    )
    return (
        full.filter(_meets(slo))
        .sort("j_per_request_mean")
        .group_by(work, maintain_order=True)
        .first()
        .join(base, on=work, how="left")
        .select(
            "model",
            workload=pl.format("offline, in {} / out {}", "input_len", "output_len"),
            setup=pl.format("{} · {} · batch {}", "engine", "precision", "batch_size"),
            j_per_request=pl.col("j_per_request_mean").round(4),
            ttft_p99_s=pl.col("ttft_p99_s").round(4),
            e2e_p99_s=pl.col("e2e_p99_s").round(4),
            saving_x=(pl.col("base_j") / pl.col("j_per_request_mean")).round(3),
            against=pl.lit(f"{baseline['precision']}, batch {baseline['batch_size']}"),
        )
    )


def _serving_best(serving: pl.DataFrame, slo: dict[str, float]) -> pl.DataFrame:
    """Per model, precision, server and offered rate: the arrival shaping, vs unshaped."""
    keys = ["model", "precision", "server", "offered_rate"]
    energy = pl.col("j_per_request_window")
    base = serving.filter(pl.col("shaping") == "pass").group_by(keys).agg(base_j=energy.min())
    return (
        serving.filter(_meets(slo, SERVING_LATENCY), energy.is_not_null())
        .sort(energy)
        .group_by(keys, maintain_order=True)
        .first()
        .join(base, on=keys, how="left")
        .select(
            "model",
            workload=pl.format("serving at {} req/s", "offered_rate"),
            setup=pl.format("{} · {} · {}", "server", "precision", "pattern"),
            j_per_request=energy.round(4),
            ttft_p99_s=pl.col("ttft_s_p99").round(4),
            e2e_p99_s=pl.col("e2e_s_p99").round(4),
            saving_x=(pl.col("base_j") / energy).round(3),
            against=pl.lit("the same rate, unshaped arrivals"),
        )
    )


def slo_recommendation(
    summary: pl.DataFrame,
    tidy: pl.DataFrame,
    slo: dict[str, float],
    baseline: dict[str, Any],
    serving: pl.DataFrame | None = None,
) -> Finding:
    """Beyond the paper: the least-energy configuration per model that meets the latency SLO."""
    title = "Least energy per request within the latency SLO"
    limits = ", ".join(f"{k.removesuffix('_s')} ≤ {v:g} s" for k, v in slo.items()) or "none"
    claim = (
        f"For each model and workload, the configuration (precision × batch × engine, and for "
        f"serving the arrival shaping) with the least energy per request that meets the SLO "
        f"({limits}), and its saving against the default setup."
    )
    rule = (
        "Offline: energy per request = full-generation energy ÷ batch size; TTFT = prefill "
        "window, end-to-end = full window (p99 over repetitions); savings against "
        f"{baseline['precision']}, batch {baseline['batch_size']}. Serving: window energy ÷ "
        "completed requests; TTFT and end-to-end from each request's arrival (p50/p99); savings "
        "against unshaped arrivals at the same rate."
    )
    if _ok(summary).is_empty() and (serving is None or serving.is_empty()):
        return Finding(title, claim, MISSING, "no measured configurations", rule)
    parts = [_offline_best(summary, tidy, slo, baseline)] if not _ok(summary).is_empty() else []
    if serving is not None and not serving.is_empty():
        parts.append(_serving_best(serving, slo))
    best = pl.concat(parts, how="vertical_relaxed").sort("model", "workload")
    if best.is_empty():
        return Finding(title, claim, FAILS, "no configuration meets the SLO", rule)
    top = best["saving_x"].max()
    text = (
        f"{best.height} workload(s): the best configuration within the SLO uses up to "
        f"{_fmt(top)} less energy per request than the default setup."
    )
    return Finding(title, claim, "recommendation", text, rule, best)


def all_findings(
    summary: pl.DataFrame,
    tidy: pl.DataFrame,
    analysis_cfg: dict[str, Any],
    serving: pl.DataFrame | None = None,
    requests: Mapping[str, np.ndarray] | None = None,
) -> list[Finding]:
    ref = analysis_cfg["baseline"]["precision"]
    confidence = analysis_cfg.get("confidence", 0.95)
    return [
        precision_finding(tidy, ref, confidence),
        batching_finding(tidy, confidence),
        shaping_finding(serving, requests, confidence),
        slo_recommendation(
            summary, tidy, analysis_cfg.get("slo", {}), analysis_cfg["baseline"], serving
        ),
    ]


def _md_table(df: pl.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = [
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in df.iter_rows()
    ]
    return "\n".join([head, sep, *rows])


def html_table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row)
        + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


@dataclass(frozen=True)
class AuditLine:
    """What the report opens with: the provenance audit's one-line verdict and its flags."""

    verdict: str
    flags: list[str] = field(default_factory=list)


def to_markdown(
    findings: list[Finding], context: dict[str, str], audit: AuditLine | None = None
) -> str:
    lines = [f"# joulebench findings — {context['study']}", ""]
    if audit is not None:
        lines += [f"**{audit.verdict}**", ""]
        lines += [f"- flagged: {flag}" for flag in audit.flags]
        lines += [""] if audit.flags else []
    lines += [f"- **{k}**: {v}" for k, v in context.items() if k != "study"]
    for i, f in enumerate(findings, 1):
        lines += [
            "",
            f"## {i}. {f.title} — **{f.verdict}**",
            "",
            f"*Claim.* {f.claim}",
            "",
            f.summary,
            "",
            f"*Rule.* {f.rule}",
        ]
        if f.deciding:
            lines += ["", _md_table(f.deciding_table())]
        if f.table is not None and not f.table.is_empty():
            lines += ["", _md_table(f.table)]
        lines += [f"- {n}" for n in f.notes]
    return "\n".join(lines) + "\n"


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2rem auto;padding:0 1rem;color:#222}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.verdict{padding:.1rem .5rem;border-radius:.3rem;font-weight:600}
.holds{background:#d4edda}.partly{background:#fff3cd}.fails{background:#f8d7da}
.missing{background:#e2e3e5}.recommendation{background:#d1ecf1}.inconclusive{background:#e7dcf5}
.audit{padding:.5rem;border-radius:.3rem;background:#eef3f8}.audit.flagged{background:#f8d7da}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}
.rule{color:#555;font-size:.9rem}.warn{background:#fff3cd;padding:.5rem;border-radius:.3rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
"""

_VERDICT_CLASS = {
    HOLDS: "holds",
    PARTLY: "partly",
    FAILS: "fails",
    MISSING: "missing",
    INCONCLUSIVE: "inconclusive",
    "recommendation": "recommendation",
}


def to_html(
    findings: list[Finding],
    context: dict[str, str],
    figures: dict[str, str],
    audit: AuditLine | None = None,
) -> str:
    """A standalone page: no scripts, figures inlined as SVG, opens offline."""
    e = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>joulebench findings — {e(context['study'])}</title>"
        f"<style>{PAGE_CSS}</style></head><body>",
        f"<h1>joulebench findings — {e(context['study'])}</h1>",
    ]
    if audit is not None:
        flagged = " flagged" if audit.flags else ""
        items = "".join(f"<li>{e(flag)}</li>" for flag in audit.flags)
        parts.append(
            f"<div class='audit{flagged}' id='provenance-audit'><b>{e(audit.verdict)}</b>"
            + (f"<ul>{items}</ul>" if items else "")
            + "</div>"
        )
    parts.append("<ul>")
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in context.items() if k != "study"]
    parts.append("</ul>")
    if "estimate" in context.get("energy source", ""):
        parts.append(
            "<p class='warn'>Energy here is the labelled <b>estimate</b> (modelled from "
            "CPU time, not measured): verdicts rank configurations, the joules are not "
            "the machine's.</p>"
        )
    for i, f in enumerate(findings, 1):
        cls = _VERDICT_CLASS.get(f.verdict, "missing")
        parts.append(
            f"<h2>{i}. {e(f.title)} <span class='verdict {cls}'>{e(f.verdict)}</span>"
            f"</h2><p><i>Claim.</i> {e(f.claim)}</p><p>{e(f.summary)}</p>"
            f"<p class='rule'><i>Rule.</i> {e(f.rule)}</p>"
        )
        if f.deciding:
            parts.append(html_table(f.deciding_table()))
        if f.table is not None and not f.table.is_empty():
            parts.append(html_table(f.table))
        parts += [f"<p class='rule'>{e(n)}</p>" for n in f.notes]
    parts.append("<h2>Figures</h2>")
    for name, svg in figures.items():
        parts.append(f"<figure id='{e(name)}'>{svg}<figcaption>{e(name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
