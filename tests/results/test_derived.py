"""Derived columns, the long table and the Pareto set, with known answers."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import make_record
from joulebench.results import analysis, derived

REPS = [
    {"pe": 1.0, "pt": 0.1, "fe": 11.0, "ft": 1.1},
    {"pe": 3.0, "pt": 0.3, "fe": 13.0, "ft": 1.3},
]
HALF = [{k: v / 2 for k, v in r.items()} for r in REPS]
ANALYSIS = {
    "baseline": {"precision": "fp32", "batch_size": 1},
    "grid_intensity_g_per_kwh": 360.0,
    "price_per_kwh": 0.5,
    "price_per_device_hour": 3.6,
    "currency": "EUR",
}


@pytest.fixture
def summary() -> pl.DataFrame:
    records = [
        make_record("fp32", 1, REPS),
        make_record("bf16", 1, HALF),
        make_record("fp32", 4, REPS),
    ]
    return derived.enrich(analysis.summarize(analysis.measurements(records)), ANALYSIS)


def test_long_table_has_metric_value_unit_source() -> None:
    tidy = analysis.measurements([make_record("fp32", 2, REPS)])
    long = derived.long_table(tidy)
    assert {"metric", "value", "unit", "source"} <= set(long.columns)
    assert long.height == tidy.height * len(derived.UNITS)
    row = long.filter(metric="j_per_token", phase="prefill", rep=0).row(0, named=True)
    assert row["unit"] == "J/token"
    assert row["value"] == pytest.approx(1.0 / (2 * 16))
    assert row["source"] == "estimate"


def test_per_token_columns(summary: pl.DataFrame) -> None:
    pre = summary.filter(precision="fp32", batch_size=4, phase="prefill").row(0, named=True)
    assert pre["j_per_input_token"] == pytest.approx(2.0 / (4 * 16))
    assert pre["j_per_output_token"] == pytest.approx(2.0 / 4)  # prefill emits one token each
    dec = summary.filter(precision="fp32", batch_size=4, phase="decode").row(0, named=True)
    assert dec["j_per_input_token"] is None  # decode processes no prompt tokens
    assert dec["tokens_per_j"] == pytest.approx(1 / dec["j_per_token_mean"])


def test_relative_to_baseline(summary: pl.DataFrame) -> None:
    bf16 = summary.filter(precision="bf16", phase="full").row(0, named=True)
    assert bf16["energy_vs_baseline"] == pytest.approx(0.5)
    assert bf16["speedup_vs_baseline"] == pytest.approx(2.0)
    fp32_b4 = summary.filter(precision="fp32", batch_size=4, phase="full").row(0, named=True)
    assert fp32_b4["energy_vs_baseline"] == pytest.approx(0.25)  # same J, 4× the tokens
    base = summary.filter(precision="fp32", batch_size=1, phase="decode").row(0, named=True)
    assert base["energy_vs_baseline"] == pytest.approx(1.0)
    assert base["baseline"] == "fp32, batch 1"


def test_carbon_and_cost_are_derived_from_inputs(summary: pl.DataFrame) -> None:
    row = summary.filter(precision="fp32", batch_size=4, phase="full").row(0, named=True)
    kwh = 12.0 / 4 / 3.6e6
    assert row["gco2e_per_request"] == pytest.approx(kwh * 360.0)
    assert row["cost_per_request"] == pytest.approx(kwh * 0.5 + 1.2 / 3600 / 4 * 3.6)
    assert row["currency"] == "EUR"
    assert "derived from config: 360 gCO2e/kWh" in row["carbon_cost_inputs"]


def test_pareto_front() -> None:
    df = pl.DataFrame({"t": [1.0, 2.0, 3.0, 2.5, 0.5, 4.0], "e": [10.0, 5.0, 1.0, 6.0, 20.0, 1.0]})
    assert derived.pareto_front(df, "t", "e").to_list() == [True, True, True, False, True, False]
