"""The findings report: each claim of the seed paper, tested on the user's own data, with the
least-energy configuration within the latency SLO, as Markdown and as a standalone HTML page.

Verdicts are computed from the repetitions with the rules stated next to them (see verdicts):
every deciding ratio carries a seeded bootstrap confidence interval, and a verdict is given only
when the unsettled intervals could not change it. Where a study lacks the data a claim needs, the
report says so instead of guessing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from joulebench.results.offline_claims import batching_finding, precision_finding
from joulebench.results.report_page import PAGE_CSS, html_table, markdown_table
from joulebench.results.serving_claims import shaping_finding
from joulebench.results.slo import slo_recommendation
from joulebench.results.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MISSING,
    PARTLY,
    RECOMMENDATION,
    Finding,
)


def all_findings(
    summary: pl.DataFrame,
    tidy: pl.DataFrame,
    analysis_cfg: dict[str, Any],
    serving: pl.DataFrame | None = None,
    requests: Mapping[str, np.ndarray] | None = None,
) -> list[Finding]:
    """The report's findings, in order: claims 1–3 of the seed paper, then the SLO pick."""
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
            lines += ["", markdown_table(f.deciding_table())]
        if f.table is not None and not f.table.is_empty():
            lines += ["", markdown_table(f.table)]
        lines += [f"- {n}" for n in f.notes]
    return "\n".join(lines) + "\n"


_VERDICT_CLASS = {
    HOLDS: "holds",
    PARTLY: "partly",
    FAILS: "fails",
    MISSING: "missing",
    INCONCLUSIVE: "inconclusive",
    RECOMMENDATION: "recommendation",
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
