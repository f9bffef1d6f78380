"""Aggregation math on hand-made records with known answers."""

from __future__ import annotations

import math

import polars as pl
import pytest
from conftest import make_record
from joulebench.core.errors import JoulebenchError
from joulebench.results import analysis

REPS = [
    {"pe": 1.0, "pt": 0.1, "fe": 11.0, "ft": 1.1},
    {"pe": 2.0, "pt": 0.2, "fe": 14.0, "ft": 1.4},
    {"pe": 3.0, "pt": 0.3, "fe": 17.0, "ft": 1.7},
]


@pytest.fixture
def tidy() -> pl.DataFrame:
    return analysis.measurements([make_record("fp32", 2, REPS), make_record("bf16", 8, REPS[:2])])


def test_tidy_has_a_row_per_config_rep_phase(tidy: pl.DataFrame) -> None:
    assert tidy.height == 3 * 3 + 2 * 3
    assert set(tidy["phase"]) == {"prefill", "decode", "full"}
    row = tidy.filter(precision="fp32", rep=1, phase="decode").row(0, named=True)
    assert row["energy_j"] == 12.0
    assert row["tokens"] == 2 * 7
    assert row["j_per_token"] == pytest.approx(12.0 / 14)
    assert row["tokens_per_s"] == pytest.approx(14 / 1.2)
    assert row["avg_power_w"] == pytest.approx(10.0)
    assert row["j_per_request"] == 6.0
    assert row["meter_source"] == "estimate"
    assert row["git_commit"] == "abc"


def test_summary_mean_std_and_ci(tidy: pl.DataFrame) -> None:
    summary = analysis.summarize(tidy, confidence=0.95)
    assert summary.height == 2 * 3
    row = summary.filter(precision="fp32", phase="prefill").row(0, named=True)
    assert row["n"] == 3
    assert row["energy_j_mean"] == pytest.approx(2.0)
    assert row["energy_j_std"] == pytest.approx(1.0)
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert row["energy_j_ci_low"] == pytest.approx(2.0 - half, rel=1e-5)
    assert row["energy_j_ci_high"] == pytest.approx(2.0 + half, rel=1e-5)
    two = summary.filter(precision="bf16", phase="full").row(0, named=True)
    assert two["n"] == 2
    assert two["energy_j_ci_high"] - two["energy_j_mean"] == pytest.approx(
        12.7062 * two["energy_j_std"] / math.sqrt(2), rel=1e-4
    )


def test_summary_keeps_environment_columns(tidy: pl.DataFrame) -> None:
    summary = analysis.summarize(tidy)
    for col in [*analysis.ENV_COLUMNS, "config_hash", "meter_source", "peak_memory_bytes"]:
        assert col in summary.columns


def test_summary_is_in_phase_order(tidy: pl.DataFrame) -> None:
    phases = analysis.summarize(tidy).filter(precision="fp32")["phase"].to_list()
    assert phases == ["prefill", "decode", "full"]


def test_meter_label_marks_estimates() -> None:
    df = pl.DataFrame({"meter_source": ["estimate", "nvml"]})
    assert "not measured" in analysis.meter_label(df)
    assert analysis.meter_label(pl.DataFrame({"meter_source": ["nvml"]})) == "nvml"


def test_no_records_is_a_user_error() -> None:
    with pytest.raises(JoulebenchError, match="no result records"):
        analysis.measurements([])
    with pytest.raises(JoulebenchError, match="no serving records"):
        analysis.serving_table([])


def test_new_quantities_are_summarised_and_old_records_still_aggregate() -> None:
    traced = make_record("fp32", 2, REPS)
    traced["energy_method"] = {
        "power_fields": {"cuda:0": "NVML_FI_DEV_POWER_INSTANT"},
        "sample_hz": 20.0,
    }
    for run in traced["runs"]:
        run["idle_power_w"] = 5.0
        run["net_energy_j"] = run["energy_j"] - 5.0 * run["time_s"]
        if run["phase"] != "decode":
            run["conservation_pct"] = 1.0 + run["rep"]  # 1, 2, 3 %
        if run["phase"] == "prefill":
            run["direct_energy_j"] = run["energy_j"] * 0.9
            run["direct_vs_subtraction_pct"] = -10.0
    old = make_record("bf16", 8, REPS[:2])  # a record from before traces: no such fields
    tidy = analysis.measurements([traced, old])
    row = tidy.filter(precision="fp32", rep=1, phase="prefill").row(0, named=True)
    assert row["net_energy_j"] == pytest.approx(2.0 - 5.0 * 0.2)
    assert row["net_j_per_token"] == pytest.approx((2.0 - 1.0) / (2 * 16))
    assert row["direct_j_per_token"] == pytest.approx(1.8 / (2 * 16))
    assert row["power_field"] == "NVML_FI_DEV_POWER_INSTANT"
    summary = analysis.summarize(tidy)
    pre = summary.filter(precision="fp32", phase="prefill").row(0, named=True)
    assert pre["conservation_pct_mean"] == pytest.approx(2.0)
    assert pre["conservation_pct_ci_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert pre["direct_vs_subtraction_pct_mean"] == pytest.approx(-10.0)
    assert pre["idle_power_w_mean"] == 5.0 and pre["sample_hz"] == 20.0
    dec = summary.filter(precision="fp32", phase="decode").row(0, named=True)
    assert dec["conservation_pct_mean"] is None and dec["direct_energy_j_mean"] is None
    assert dec["net_energy_j_mean"] == pytest.approx(12.0 - 5.0 * 1.2)  # mean of 3 reps
    untraced = summary.filter(precision="bf16")
    assert untraced["net_energy_j_mean"].null_count() == untraced.height
    assert untraced["energy_j_mean"].null_count() == 0


def test_each_gpu_keeps_its_own_energy_column_and_tp_is_a_column() -> None:
    rec = make_record("bf16", 4, [{"pe": 2.0, "pt": 0.1, "fe": 10.0, "ft": 1.0}] * 2, "nvml")
    rec["config"]["tensor_parallel"] = 2
    for run in rec["runs"]:
        run["energy_by_device_j"] = {
            "cuda:0": run["energy_j"] * 0.6,
            "cuda:1": run["energy_j"] * 0.4,
        }
    tidy = analysis.measurements([rec])
    assert (tidy["tensor_parallel"] == 2).all()
    both = tidy["energy_j[cuda:0]"] + tidy["energy_j[cuda:1]"]
    assert ((both - tidy["energy_j"]).abs() < 1e-9).all()
    summary = analysis.summarize(tidy, 0.95)
    assert (summary["tensor_parallel"] == 2).all()
