"""The findings report: each claim of the seed paper, tested on the user's own data.

Verdicts are computed from the summary table with the rules stated next to them; where a study
lacks the data a claim needs, the report says so instead of guessing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from joulebench.derived import COMPARABLE

#: A difference smaller than this factor is treated as no difference (noise, estimate).
MARGIN = 1.10

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly holds", "does not hold", "missing data"


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


def _ok(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.filter(pl.col("j_per_token_mean").is_not_null(), status="ok")


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def precision_finding(summary: pl.DataFrame, reference: str = "fp32") -> Finding:
    """Claim 1: lower precision saves energy only when compute-bound."""
    title = "Lower precision saves energy only when compute-bound"
    claim = (
        "Reducing precision (fp32 → bf16/fp16/int8) lowers energy per token when the work "
        "is compute-bound (large batch × prompt, prefill), not when it is memory-bound "
        "(small-batch decode)."
    )
    rule = (
        f"For each point (phase, batch, lengths) the saving of a precision is J/token of "
        f"{reference} ÷ its J/token. Compute-bound point: prefill at the largest "
        f"batch × input length; memory-bound point: decode at the smallest batch. Holds if "
        f"the best lower precision saves ≥ {MARGIN:.2f}× at the compute-bound point and "
        f"less than that at the memory-bound point; partly holds if it saves at both but "
        f"more when compute-bound; otherwise it does not hold."
    )
    data = _ok(summary).filter(pl.col("phase").is_in(["prefill", "decode"]))
    keys = [*COMPARABLE, "batch_size"]
    ref = data.filter(precision=reference).select(*keys, ref=pl.col("j_per_token_mean"))
    low = data.filter(pl.col("precision") != reference).join(ref, on=keys, nulls_equal=True)
    if low.is_empty():
        return Finding(
            title,
            claim,
            MISSING,
            f"needs {reference} and at least one lower precision measured at the same points",
            rule,
        )
    low = low.with_columns(
        saving=pl.col("ref") / pl.col("j_per_token_mean"),
        work=pl.col("batch_size")
        * pl.when(pl.col("phase") == "prefill").then(pl.col("input_len")).otherwise(1),
    )
    best = (
        low.sort("saving", descending=True)
        .group_by([*keys, "work"], maintain_order=True)
        .agg(pl.col("precision").first().alias("best_precision"), pl.col("saving").max())
        .sort("phase", "batch_size", "input_len")
    )
    prefill, decode = best.filter(phase="prefill"), best.filter(phase="decode")
    if prefill.is_empty() or decode.is_empty():
        return Finding(title, claim, MISSING, "needs both prefill and decode points", rule)
    s_cb = prefill.sort("work")["saving"][-1]
    s_mb = decode.sort("work")["saving"][0]
    helps = best.filter(pl.col("saving") >= MARGIN)
    where = (
        ", ".join(
            f"{r['phase']} bs {r['batch_size']} in {r['input_len']}"
            for r in helps.iter_rows(named=True)
        )
        or "nowhere"
    )
    if s_cb >= MARGIN and s_mb < MARGIN:
        verdict = HOLDS
    elif s_cb >= MARGIN and s_cb > s_mb:
        verdict = PARTLY
    else:
        verdict = FAILS
    text = (
        f"Best lower precision saves {_fmt(s_cb)} at the most compute-bound point and "
        f"{_fmt(s_mb)} at the most memory-bound point. Saves ≥ {MARGIN:.2f}× at: {where}."
    )
    table = best.select(
        "model",
        "engine",
        "phase",
        "batch_size",
        "input_len",
        "output_len",
        "best_precision",
        pl.col("saving").round(3).alias("saving_x"),
    )
    return Finding(title, claim, verdict, text, rule, table)


def batching_finding(summary: pl.DataFrame) -> Finding:
    """Claim 2: batching cuts energy per token, more in decode than in prefill."""
    title = "Batching cuts energy per token, most in decode"
    claim = (
        "Larger batches lower energy per token, and the gain is larger in memory-bound "
        "decoding than in prefill."
    )
    rule = (
        f"For each (model, engine, precision, lengths) the gain is J/token at the smallest "
        f"batch ÷ J/token at the largest, per phase; medians over groups. Holds if the decode "
        f"gain is ≥ {MARGIN:.2f}× and larger than the prefill gain; partly holds if both "
        f"phases gain ≥ {MARGIN:.2f}× but prefill gains more; otherwise it does not hold."
    )
    data = _ok(summary).filter(pl.col("phase").is_in(["prefill", "decode"]))
    group = [*COMPARABLE, "precision"]
    gains = (
        data.sort("batch_size")
        .group_by(group, maintain_order=True)
        .agg(
            pl.col("batch_size").first().alias("batch_min"),
            pl.col("batch_size").last().alias("batch_max"),
            (pl.col("j_per_token_mean").first() / pl.col("j_per_token_mean").last()).alias("gain"),
        )
        .filter(pl.col("batch_max") > pl.col("batch_min"))
        .sort("model", "precision", "phase")
    )
    if gains.is_empty():
        return Finding(title, claim, MISSING, "needs at least two batch sizes", rule)
    med = {p: gains.filter(phase=p)["gain"].median() for p in ("prefill", "decode")}
    if med["decode"] is None or med["prefill"] is None:
        return Finding(title, claim, MISSING, "needs both prefill and decode points", rule)
    if med["decode"] >= MARGIN and med["decode"] > med["prefill"]:
        verdict = HOLDS
    elif med["decode"] >= MARGIN and med["prefill"] >= MARGIN:
        verdict = PARTLY
    else:
        verdict = FAILS
    text = (
        f"From the smallest to the largest batch, energy per token falls "
        f"{_fmt(med['decode'])} in decode and {_fmt(med['prefill'])} in prefill "
        f"(medians over {gains.height // 2} groups)."
    )
    table = gains.select(
        "model",
        "engine",
        "precision",
        "phase",
        "input_len",
        "output_len",
        "batch_min",
        "batch_max",
        pl.col("gain").round(3).alias("gain_x"),
    )
    return Finding(title, claim, verdict, text, rule, table)


def shaping_finding(serving: pl.DataFrame | None) -> Finding:
    """Claim 3: shaping request arrivals cuts energy per request."""
    title = "Arrival shaping cuts energy per request"
    claim = (
        "How requests arrive at a server (spacing, bursts, batching them on release) changes "
        "energy per request by a large factor — up to 100× in the seed study."
    )
    rule = (
        f"Energy per request (window energy ÷ completed requests, the seed study's way) of "
        f"the best arrival pattern vs the worst, per model, precision, server and offered "
        f"rate. Holds if the best pattern saves ≥ {MARGIN:.2f}×."
    )
    if serving is None or serving.is_empty():
        return Finding(
            title,
            claim,
            MISSING,
            "this study has no serving experiment (add a `serving:` section)",
            rule,
        )
    energy = pl.col("j_per_request_window")
    keys = [k for k in ("model", "precision", "server", "offered_rate") if k in serving.columns]
    by = (
        serving.filter(energy.is_not_null() & (energy > 0))
        .group_by(keys)
        .agg(
            pl.col("pattern").sort_by(energy).first().alias("best"),
            pl.col("pattern").sort_by(energy).last().alias("worst"),
            energy.min().round(4).alias("best_j_per_request"),
            energy.max().round(4).alias("worst_j_per_request"),
            (energy.max() / energy.min()).alias("factor"),
            pl.len().alias("patterns"),
        )
        .filter(pl.col("patterns") > 1)
        .sort(keys)
    )
    if by.is_empty():
        return Finding(
            title, claim, MISSING, "needs at least two arrival patterns at one rate", rule
        )
    top = by["factor"].max()
    verdict = HOLDS if top is not None and top >= MARGIN else FAILS
    text = f"The best arrival pattern needs up to {_fmt(top)} less energy per request."
    return Finding(
        title,
        claim,
        verdict,
        text,
        rule,
        by.with_columns(pl.col("factor").round(3).alias("factor_x")).drop("factor"),
    )


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
) -> list[Finding]:
    ref = analysis_cfg["baseline"]["precision"]
    return [
        precision_finding(summary, ref),
        batching_finding(summary),
        shaping_finding(serving),
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


def _html_table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row)
        + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def to_markdown(findings: list[Finding], context: dict[str, str]) -> str:
    lines = [f"# joulebench findings — {context['study']}", ""]
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
        if f.table is not None and not f.table.is_empty():
            lines += ["", _md_table(f.table)]
        lines += [f"- {n}" for n in f.notes]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2rem auto;padding:0 1rem;color:#222}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.verdict{padding:.1rem .5rem;border-radius:.3rem;font-weight:600}
.holds{background:#d4edda}.partly{background:#fff3cd}.fails{background:#f8d7da}
.missing{background:#e2e3e5}.recommendation{background:#d1ecf1}
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
    "recommendation": "recommendation",
}


def to_html(findings: list[Finding], context: dict[str, str], figures: dict[str, str]) -> str:
    """A standalone page: no scripts, figures inlined as SVG, opens offline."""
    e = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>joulebench findings — {e(context['study'])}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>joulebench findings — {e(context['study'])}</h1><ul>",
    ]
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
        if f.table is not None and not f.table.is_empty():
            parts.append(_html_table(f.table))
    parts.append("<h2>Figures</h2>")
    for name, svg in figures.items():
        parts.append(f"<figure id='{e(name)}'>{svg}<figcaption>{e(name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
