"""Verdicts are computed from the data: each claim holds, fails or lacks data as it should."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from conftest import make_record
from joulebench import analysis, findings


def rec(precision: str, batch: int, prefill_j: float, decode_j: float) -> dict[str, Any]:
    reps = [
        {"pe": prefill_j * f, "pt": 0.1 * f, "fe": (prefill_j + decode_j) * f, "ft": 0.1 * f + 0.5}
        for f in (0.99, 1.01)
    ]
    return make_record(precision, batch, reps)


def summarize(records: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    tidy = analysis.measurements(records)
    return analysis.summarize(tidy), tidy


def test_precision_claim_holds_when_it_helps_only_compute_bound() -> None:
    # prefill: bf16 halves energy at batch 8; decode at batch 1: the same energy
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 0.9, 10.0),
        rec("fp32", 8, 8.0, 20.0),
        rec("bf16", 8, 4.0, 19.0),
    ]
    f = findings.precision_finding(summarize(records)[0])
    assert f.verdict == findings.HOLDS
    assert "2.00×" in f.summary


def test_precision_claim_fails_when_it_helps_memory_bound_most() -> None:
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 1.0, 4.0),
        rec("fp32", 8, 8.0, 20.0),
        rec("bf16", 8, 8.0, 10.0),
    ]
    assert findings.precision_finding(summarize(records)[0]).verdict == findings.FAILS


def test_precision_claim_needs_the_reference() -> None:
    records = [rec("bf16", 1, 1.0, 10.0), rec("bf16", 8, 4.0, 19.0)]
    assert findings.precision_finding(summarize(records)[0]).verdict == findings.MISSING


@pytest.mark.parametrize(
    ("prefill_8", "decode_8", "verdict"),
    [
        (4.0, 2.0, findings.HOLDS),  # decode 5× per token better, prefill 2×
        (1.0, 40.0, findings.PARTLY),  # both gain, prefill more
        (8.0, 80.0, findings.FAILS),
    ],  # no gain per token
)
def test_batching_claim(prefill_8: float, decode_8: float, verdict: str) -> None:
    # batch 1: prefill 1 J, decode 10 J; batch 8 has 8× the tokens
    records = [rec("fp32", 1, 1.0, 10.0), rec("fp32", 8, 8 * prefill_8 / 8, decode_8 * 8 / 8)]
    f = findings.batching_finding(summarize(records)[0])
    assert f.verdict == verdict, f.summary


def test_batching_needs_two_batch_sizes() -> None:
    f = findings.batching_finding(summarize([rec("fp32", 1, 1.0, 10.0)])[0])
    assert f.verdict == findings.MISSING


def test_shaping_claim() -> None:
    assert findings.shaping_finding(None).verdict == findings.MISSING
    serving = pl.DataFrame(
        {
            "model": ["m"] * 4,
            "offered_rate": [2.0, 2.0, 2.0, 5.0],
            "pattern": ["poisson", "grouped-100ms", "constant", "poisson"],
            "j_per_request_window": [10.0, 2.5, 9.0, 3.0],
        }
    )
    f = findings.shaping_finding(serving)
    assert f.verdict == findings.HOLDS
    assert "4.00×" in f.summary
    assert f.table["best"][0] == "grouped-100ms" and f.table["worst"][0] == "poisson"
    assert f.table.height == 1  # a rate with a single pattern compares nothing
    one = serving.filter(offered_rate=5.0)
    assert findings.shaping_finding(one).verdict == findings.MISSING


def test_slo_recommendation_picks_least_energy_that_meets_it() -> None:
    # batch 8 uses less energy per request but takes 0.6 s end to end; batch 1 takes 0.6 s too
    records = [rec("fp32", 1, 1.0, 10.0), rec("bf16", 1, 0.5, 5.0), rec("fp32", 8, 4.0, 20.0)]
    summary, tidy = summarize(records)
    base = {"precision": "fp32", "batch_size": 1}
    best = findings.slo_recommendation(summary, tidy, {}, base).table
    assert best["setup"][0] == "transformers · fp32 · batch 8"
    assert best["saving_x"][0] == pytest.approx(11.0 / 3.0, rel=1e-3)
    none = findings.slo_recommendation(summary, tidy, {"e2e_p99_s": 0.01}, base)
    assert none.verdict == findings.FAILS


def test_slo_recommendation_includes_arrival_shaping() -> None:
    summary, tidy = summarize([rec("fp32", 1, 1.0, 10.0)])
    serving = pl.DataFrame(
        {
            "model": ["m"] * 3,
            "precision": ["bf16"] * 3,
            "server": ["tfserve"] * 3,
            "offered_rate": [2.0] * 3,
            "pattern": ["poisson", "grouped-fast", "grouped-slow"],
            "shaping": ["pass", "group every 100 ms", "group every 2000 ms"],
            "j_per_request_window": [10.0, 4.0, 2.0],
            "ttft_s_p99": [0.1, 0.3, 2.5],
            "e2e_s_p99": [0.5, 0.8, 3.0],
        }
    )
    base = {"precision": "fp32", "batch_size": 1}
    f = findings.slo_recommendation(summary, tidy, {"e2e_p99_s": 1.0}, base, serving)
    row = f.table.filter(pl.col("workload").str.starts_with("serving")).row(0, named=True)
    assert row["setup"] == "tfserve · bf16 · grouped-fast"  # the slower grouping misses the SLO
    assert row["saving_x"] == pytest.approx(2.5)
    assert row["against"] == "the same rate, unshaped arrivals"
    assert f.table.height == 2  # the offline workload and the serving one


def test_report_renders_every_verdict() -> None:
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 0.9, 10.0),
        rec("fp32", 8, 8.0, 20.0),
        rec("bf16", 8, 4.0, 19.0),
    ]
    summary, tidy = summarize(records)
    cfg = {"baseline": {"precision": "fp32", "batch_size": 1}, "slo": {"e2e_p99_s": 5.0}}
    results = findings.all_findings(summary, tidy, cfg)
    context = {"study": "t", "energy source": analysis.meter_label(summary)}
    md = findings.to_markdown(results, context)
    page = findings.to_html(results, context, {"fig": "<svg><rect/></svg>"})
    for f in results:
        assert f.verdict in md and f.title in page
    assert "missing data" in md  # no serving data: said, not guessed
    assert "<script" not in page and "<svg><rect/></svg>" in page
    assert "estimate" in page
