"""Verdicts are computed from the data: each claim holds, fails or lacks data as it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import make_record
from joulebench.results import analysis, findings, offline_claims, serving_claims, slo, verdicts


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
    f = offline_claims.precision_finding(summarize(records)[1])
    assert f.verdict == verdicts.HOLDS
    assert "2.00× [" in f.summary
    cb = f.table.filter(point="compute-bound").row(0, named=True)
    assert cb["winner"] == "bf16" and cb["ci_low"] <= 2.0 <= cb["ci_high"]
    # the deciding ratios carry the same interval as the table behind them
    row = f.deciding_table().row(0, named=True)
    assert (row["ci_low"], row["ci_high"], row["reading"]) == (cb["ci_low"], cb["ci_high"], "above")


def test_precision_claim_fails_when_it_helps_memory_bound_most() -> None:
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 1.0, 4.0),
        rec("fp32", 8, 8.0, 20.0),
        rec("bf16", 8, 8.0, 10.0),
    ]
    assert offline_claims.precision_finding(summarize(records)[1]).verdict == verdicts.FAILS


@pytest.mark.parametrize(
    ("cb_saving", "mb_saving", "verdict"),
    [
        # saves ≥ 1.10× at both points, but more when memory-bound: the quotient decides
        (1.5, 2.5, verdicts.FAILS),
        # saves ≥ 1.10× at both points and more when compute-bound
        (3.0, 1.5, verdicts.PARTLY),
        # saves at the compute-bound point only: the memory-bound check decides
        (3.0, 1.0, verdicts.HOLDS),
    ],
)
def test_precision_claim_weighs_both_points_and_their_quotient(
    cb_saving: float, mb_saving: float, verdict: str
) -> None:
    # compute-bound point: prefill at batch 8; memory-bound point: decode at batch 1
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 1.0, 10.0 / mb_saving),
        rec("fp32", 8, 8.0, 20.0),
        rec("bf16", 8, 8.0 / cb_saving, 20.0),
    ]
    f = offline_claims.precision_finding(summarize(records)[1])
    assert f.verdict == verdict, f.summary
    assert [d.interval.estimate for d in f.deciding] == pytest.approx(
        [cb_saving, mb_saving, cb_saving / mb_saving], rel=1e-3
    )


def test_precision_claim_does_not_hold_when_the_reference_wins_everywhere() -> None:
    # bf16 costs more than fp32 at every point: no saving in either direction counts
    records = [
        rec("fp32", 1, 1.0, 10.0),
        rec("bf16", 1, 1.5, 15.0),
        rec("fp32", 8, 4.0, 20.0),
        rec("bf16", 8, 8.0, 40.0),
    ]
    f = offline_claims.precision_finding(summarize(records)[1])
    assert f.verdict == verdicts.FAILS, f.summary
    assert set(f.table["winner"]) == {"fp32"}
    assert f.table.filter(point="compute-bound")["saving_x"][0] == pytest.approx(0.5, rel=0.02)


def test_precision_claim_needs_the_reference() -> None:
    records = [rec("bf16", 1, 1.0, 10.0), rec("bf16", 8, 4.0, 19.0)]
    assert offline_claims.precision_finding(summarize(records)[1]).verdict == verdicts.MISSING


@pytest.mark.parametrize(
    ("prefill_8", "decode_8", "verdict"),
    [
        (4.0, 2.0, verdicts.HOLDS),  # per token: decode 40× cheaper at batch 8, prefill 2×
        (1.0, 40.0, verdicts.PARTLY),  # both gain, prefill more: 8× against decode's 2×
        (8.0, 80.0, verdicts.FAILS),  # no gain per token in either phase
    ],
)
def test_batching_claim(prefill_8: float, decode_8: float, verdict: str) -> None:
    # batch 1: prefill 1 J for 16 tokens, decode 10 J for 7; batch 8 has 8× the tokens, so the
    # per-token gain is 8 / prefill_8 in prefill and 80 / decode_8 in decode
    records = [rec("fp32", 1, 1.0, 10.0), rec("fp32", 8, prefill_8, decode_8)]
    f = offline_claims.batching_finding(summarize(records)[1])
    assert f.verdict == verdict, f.summary


def test_batching_claim_does_not_hold_when_the_small_batch_wins() -> None:
    # batch 8 costs more per token than batch 1 in both phases
    records = [rec("fp32", 1, 1.0, 10.0), rec("fp32", 8, 16.0, 160.0)]
    f = offline_claims.batching_finding(summarize(records)[1])
    assert f.verdict == verdicts.FAILS, f.summary
    assert f.table["cheapest_batch"].to_list() == [1, 1]
    decode = f.table.filter(phase="decode").row(0, named=True)
    assert decode["gain_x"] == pytest.approx(0.5, rel=0.02)
    assert "smallest batch was the cheapest in 2 of 2 groups" in f.summary


def test_batching_needs_two_batch_sizes() -> None:
    f = offline_claims.batching_finding(summarize([rec("fp32", 1, 1.0, 10.0)])[1])
    assert f.verdict == verdicts.MISSING


def serving_table(rows: list[tuple[float, str, str, float]]) -> pl.DataFrame:
    """(rate, pattern, shaping label, J/request) rows of one model/precision/server."""
    return pl.DataFrame(
        {
            "model": ["m"] * len(rows),
            "precision": ["bf16"] * len(rows),
            "server": ["tfserve"] * len(rows),
            "process": ["poisson"] * len(rows),
            "offered_rate": [r[0] for r in rows],
            "pattern": [r[1] for r in rows],
            "shaping": [r[2] for r in rows],
            "j_per_request_window": [r[3] for r in rows],
            "config_id": [f"m/bf16/tfserve/{r[1]}-{r[0]:g}" for r in rows],
        }
    )


GROUP = "group every 1000 ms"


def request_spread(table: pl.DataFrame, spread: float, n: int = 20) -> dict[str, np.ndarray]:
    """Per experiment: ``n`` per-request energies around its J/request (relative spread)."""
    rng = np.random.default_rng(1)
    return {
        cid: j * (1 + spread * rng.standard_normal(n))
        for cid, j in zip(table["config_id"], table["j_per_request_window"], strict=True)
    }


def test_shaping_claim_compares_shaped_with_unshaped_at_each_rate() -> None:
    assert serving_claims.shaping_finding(None).verdict == verdicts.MISSING
    serving = serving_table(
        [
            (2.0, "poisson", "pass", 10.0),
            (2.0, "grouped", GROUP, 2.5),
            (5.0, "poisson", "pass", 3.0),
        ]
    )
    f = serving_claims.shaping_finding(serving, request_spread(serving, 0.05))
    assert f.verdict == verdicts.HOLDS, f.summary
    row = f.table.row(0, named=True)
    assert (row["shaped"], row["unshaped"], row["cheaper"]) == (
        "grouped",
        "poisson",
        "shaped (grouped)",
    )
    assert row["saving_x"] == pytest.approx(4.0)
    assert row["ci_low"] < 4.0 < row["ci_high"]
    assert f.table.height == 1  # a rate without shaped arrivals compares nothing
    one = serving.filter(offered_rate=5.0)
    assert serving_claims.shaping_finding(one).verdict == verdicts.MISSING


def test_shaping_claim_does_not_hold_when_unshaped_arrivals_are_cheaper() -> None:
    # the old rule (best pattern vs worst, either way) called this "holds": 2× apart
    serving = serving_table(
        [
            (2.0, "poisson", "pass", 2.0),
            (2.0, "grouped", GROUP, 4.0),
            (5.0, "poisson", "pass", 1.0),
            (5.0, "grouped", GROUP, 2.0),
        ]
    )
    f = serving_claims.shaping_finding(serving, request_spread(serving, 0.05))
    assert f.verdict == verdicts.FAILS, f.summary
    assert set(f.table["cheaper"]) == {"unshaped (poisson)"}
    assert "Unshaped arrivals were the cheaper ones at 2, 5 req/s" in f.summary


def test_shaping_claim_partly_holds_when_it_saves_at_some_rates() -> None:
    serving = serving_table(
        [
            (2.0, "poisson", "pass", 8.0),
            (2.0, "grouped", GROUP, 2.0),
            (5.0, "poisson", "pass", 1.0),
            (5.0, "grouped", GROUP, 2.0),
        ]
    )
    f = serving_claims.shaping_finding(serving, request_spread(serving, 0.05))
    assert f.verdict == verdicts.PARTLY, f.summary
    assert [d.reading for d in f.deciding] == ["above", "below"]


def noisy_precision_study(seed: int, cb_saving: float, noise: float, reps: int) -> pl.DataFrame:
    """A made-up machine: bf16 saves ``cb_saving`` in prefill at batch 8, nothing in decode at
    batch 1; every repetition carries multiplicative noise ``noise`` (a seeded normal)."""
    rng = np.random.default_rng(seed)

    def reps_of(prefill_j: float, decode_j: float) -> list[dict[str, float]]:
        out = []
        for _ in range(reps):
            pe = prefill_j * (1 + noise * rng.standard_normal())
            de = decode_j * (1 + noise * rng.standard_normal())
            out.append({"pe": pe, "pt": 0.1, "fe": pe + de, "ft": 0.6})
        return out

    records = [
        make_record("fp32", 1, reps_of(1.0, 10.0)),
        make_record("bf16", 1, reps_of(1.0, 10.0)),
        make_record("fp32", 8, reps_of(8.0, 20.0)),
        make_record("bf16", 8, reps_of(8.0 / cb_saving, 20.0)),
    ]
    return analysis.measurements(records)


def test_noise_around_the_threshold_is_inconclusive_never_a_flip() -> None:
    # 30 pairs of runs of the same machine, its compute-bound saving exactly at the threshold
    # (5 repetitions, 4% noise): the old rule flipped between "holds" and "does not hold"
    runs = [noisy_precision_study(s, verdicts.MARGIN, 0.04, 5) for s in range(60)]
    old = [verdicts.HOLDS if _point_saving(t) >= verdicts.MARGIN else verdicts.FAILS for t in runs]
    new = [offline_claims.precision_finding(t).verdict for t in runs]
    flip = {verdicts.HOLDS, verdicts.FAILS}
    assert sum({old[i], old[i + 1]} == flip for i in range(0, 60, 2)) >= 5  # noise flips it
    assert [i for i in range(0, 60, 2) if {new[i], new[i + 1]} == flip] == [], new
    assert new.count(verdicts.INCONCLUSIVE) >= 54, new


def _point_saving(tidy: pl.DataFrame) -> float:
    """The compute-bound point's saving from plain means (what the old verdict compared)."""
    prefill = (
        tidy.filter(phase="prefill", batch_size=8)
        .group_by("precision")
        .agg(pl.col("j_per_token").mean())
    )
    j = dict(zip(prefill["precision"], prefill["j_per_token"], strict=True))
    return j["fp32"] / j["bf16"]


def test_inconclusive_says_how_many_repetitions_would_settle_it() -> None:
    f = offline_claims.precision_finding(noisy_precision_study(3, 1.15, 0.06, 5))
    assert f.verdict == verdicts.INCONCLUSIVE, f.summary
    cb = next(d for d in f.deciding if d.interval.versus(d.threshold) is None)
    assert cb.interval.low < cb.threshold <= cb.interval.high
    need = cb.interval.reps_to_settle(cb.threshold)
    assert need is not None and need > 5
    assert "it could still be “does not hold” or “holds” or “partly holds”" in f.summary
    assert "repetitions per configuration (now 5) would likely settle it" in f.summary
    assert cb.reading.startswith("straddles (")
    # clear data settles it: the same machine with a large saving and little noise
    clear = offline_claims.precision_finding(noisy_precision_study(3, 2.0, 0.01, 5))
    assert clear.verdict == verdicts.HOLDS


def test_intervals_are_reproducible() -> None:
    tidy = noisy_precision_study(7, 1.3, 0.05, 5)
    a, b = (
        offline_claims.precision_finding(tidy),
        offline_claims.precision_finding(tidy.sample(fraction=1.0, shuffle=True, seed=2)),
    )
    assert a.deciding_table().equals(b.deciding_table())


def test_decide_gives_a_verdict_only_when_the_unknowns_cannot_change_it() -> None:
    def rule(c: Any) -> str:
        return verdicts.HOLDS if c["a"] and c["b"] else verdicts.FAILS

    assert verdicts.decide({"a": False, "b": None}, rule) == (verdicts.FAILS, {verdicts.FAILS})
    verdict, possible = verdicts.decide({"a": True, "b": None}, rule)
    assert verdict == verdicts.INCONCLUSIVE and possible == {verdicts.HOLDS, verdicts.FAILS}
    assert verdicts.decide({"a": True, "b": True}, rule)[0] == verdicts.HOLDS


def test_slo_recommendation_picks_least_energy_that_meets_it() -> None:
    # J/request (full energy ÷ batch): fp32 bs1 11, bf16 bs1 5.5, fp32 bs8 24 / 8 = 3
    records = [rec("fp32", 1, 1.0, 10.0), rec("bf16", 1, 0.5, 5.0), rec("fp32", 8, 4.0, 20.0)]
    summary, tidy = summarize(records)
    base = {"precision": "fp32", "batch_size": 1}
    best = slo.slo_recommendation(summary, tidy, {}, base).table
    assert best["setup"].to_list() == ["transformers · fp32 · batch 8"]
    assert best["saving_x"][0] == pytest.approx(11.0 / 3.0, rel=1e-3)
    none = slo.slo_recommendation(summary, tidy, {"e2e_p99_s": 0.01}, base)
    assert none.verdict == verdicts.FAILS


def test_slo_recommendation_skips_the_cheapest_when_its_p99_misses() -> None:
    # batch 8 is the cheapest per request (3 J) but one of its three repetitions took 2 s end
    # to end: its median (0.6 s) meets a 1 s SLO, its p99 (≈ 1.97 s) does not
    slow = [
        {"pe": 4.0, "pt": 0.1, "fe": 24.0, "ft": 0.6},
        {"pe": 4.0, "pt": 0.1, "fe": 24.0, "ft": 0.6},
        {"pe": 4.0, "pt": 0.1, "fe": 24.0, "ft": 2.0},
    ]
    records = [rec("fp32", 1, 1.0, 10.0), rec("bf16", 1, 0.5, 5.0), make_record("fp32", 8, slow)]
    summary, tidy = summarize(records)
    base = {"precision": "fp32", "batch_size": 1}
    # without an SLO batch 8 wins; with one, the next cheapest that meets it does
    assert slo.slo_recommendation(summary, tidy, {}, base).table["setup"].to_list() == [
        "transformers · fp32 · batch 8"
    ]
    f = slo.slo_recommendation(summary, tidy, {"e2e_p99_s": 1.0}, base)
    row = f.table.row(0, named=True)
    assert f.table.height == 1 and row["setup"] == "transformers · bf16 · batch 1"
    assert row["saving_x"] == pytest.approx(11.0 / 5.5, rel=1e-3)
    assert row["e2e_p99_s"] == pytest.approx(0.1 * 1.01 + 0.5, abs=1e-3)
    # the p50 key reads the median: batch 8 meets a 1 s median
    median = slo.slo_recommendation(summary, tidy, {"e2e_p50_s": 1.0}, base)
    assert median.table["setup"].to_list() == ["transformers · fp32 · batch 8"]


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
    f = slo.slo_recommendation(summary, tidy, {"e2e_p99_s": 1.0}, base, serving)
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
    audit = findings.AuditLine("Provenance audit: 4 records, NOT comparable", ["dirty tree"])
    md = findings.to_markdown(results, context, audit)
    page = findings.to_html(results, context, {"fig": "<svg><rect/></svg>"}, audit)
    assert md.splitlines()[2] == "**Provenance audit: 4 records, NOT comparable**"
    assert "- flagged: dirty tree" in md and "<li>dirty tree</li>" in page
    assert "| deciding ratio | estimate_x | ci_low | ci_high |" in md
    # by hand: bf16 halves prefill at batch 8 only; batching saves ~4× in decode, ~1.4× in
    # prefill; no serving data; the SLO is a recommendation
    expected = [verdicts.HOLDS, verdicts.HOLDS, verdicts.MISSING, "recommendation"]
    assert [f.verdict for f in results] == expected
    css = {"holds": "holds", "missing data": "missing", "recommendation": "recommendation"}
    for i, f in enumerate(results, 1):
        assert f"## {i}. {f.title} — **{f.verdict}**" in md.splitlines()
        assert (
            f"<h2>{i}. {f.title} <span class='verdict {css[f.verdict]}'>{f.verdict}</span></h2>"
            in page
        )
    assert "<script" not in page and "<svg><rect/></svg>" in page
    # an estimate is flagged as one on the page; measured energy is not
    warn = "<p class='warn'>"
    assert context["energy source"].startswith("estimate") and warn in page
    measured = findings.to_html(results, {"study": "t", "energy source": "nvml"}, {}, audit)
    assert warn not in measured and "<h2>Figures</h2>" in measured


def test_page_shows_each_verdict_in_its_colour() -> None:
    css = {
        verdicts.HOLDS: "holds",
        verdicts.PARTLY: "partly",
        verdicts.FAILS: "fails",
        verdicts.MISSING: "missing",
        verdicts.INCONCLUSIVE: "inconclusive",
        "recommendation": "recommendation",
    }
    results = [verdicts.Finding(f"claim {v}", "c", v, "s", "r") for v in css]
    page = findings.to_html(results, {"study": "t"}, {})
    md = findings.to_markdown(results, {"study": "t"})
    for i, (verdict, cls) in enumerate(css.items(), 1):
        assert f"<span class='verdict {cls}'>{verdict}</span>" in page
        assert f"## {i}. claim {verdict} — **{verdict}**" in md.splitlines()


def test_request_energies_read_the_per_request_tables(tmp_path: Path) -> None:
    serving = serving_table([(2.0, "poisson", "pass", 10.0), (2.0, "grouped", GROUP, 2.5)])
    first = tmp_path / "m" / "bf16" / "tfserve" / "poisson-2.parquet"
    first.parent.mkdir(parents=True)
    pl.DataFrame(
        {
            "status": ["ok", "timeout", "ok"],
            "energy_attributed_raw_j": [8.0, 45.0, 10.0],  # before scaling to the meter
            "energy_attributed_scaled_j": [9.0, 50.0, 11.0],
        }
    ).write_parquet(first)
    found = findings.request_energies(serving, tmp_path)
    assert list(found) == ["m/bf16/tfserve/poisson-2"]  # the other table is absent
    assert found["m/bf16/tfserve/poisson-2"].tolist() == [9.0, 11.0]  # completed requests only
    f = serving_claims.shaping_finding(serving, found)
    assert (
        f.notes[-1] == "some experiments have no per-request table: their intervals show no spread"
    )
    assert f.table["saving_x"][0] == pytest.approx(4.0)
