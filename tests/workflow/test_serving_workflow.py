"""The serving stage through the snakemake CLI with a real `transformers serve` (slow tier)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import NO_POWERCAP, TINY_MODEL
from test_workflow import planned, snakemake, write_config

pytestmark = pytest.mark.slow

STUDY: dict[str, Any] = {
    "study": "serving-e2e",
    "device": "cpu",
    "models": [TINY_MODEL],
    "precisions": ["fp32"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
    "measurement": {
        "warmup_runs": 0,
        "repetitions": 2,
        "min_window_s": 0.05,
        "powercap_root": NO_POWERCAP,  # auto: the estimate on every host
    },
    "serving": {
        "servers": [{"name": "tf", "kind": "transformers"}],
        "requests": 6,
        "warmup_requests": 2,
        "input_len": 8,
        "output_len": 4,
        "rates": [4],
        "arrivals": [
            {"name": "poisson", "process": "poisson"},
            {
                "name": "grouped",
                "process": "poisson",
                "shaping": {"policy": "group", "max_waiting": 3},
            },
        ],
        "idle_s": 0.2,
        "trace_interval_s": 0.01,
    },
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("serving_study")
    write_config(workdir, STUDY)
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def test_serving_outputs(study: Path) -> None:
    session = study / "results" / "serving" / "tiny" / "fp32" / "tf"
    for exp in ("poisson_r4", "grouped_r4"):
        assert (session / f"{exp}.json").is_file() and (session / f"{exp}.parquet").is_file()
    assert (session / "server.log").read_text().startswith("$ ")
    table = pl.read_parquet(study / "results" / "tables" / "serving.parquet")
    assert sorted(table["experiment"]) == ["grouped_r4", "poisson_r4"]
    assert (table["ok"] == 6).all()
    # smoke check: the estimate's trace and window are one model, sampled at the window's edges,
    # so this cannot catch a metering error (energy truth: tests/serving/test_serving_meters.py)
    assert (table["conservation_pct"].abs() < 2.0).all() and (
        table["closure_pct"].abs() < 2.0
    ).all()
    for exp in ("poisson_r4", "grouped_r4"):
        assert (session / f"{exp}.trace.parquet").is_file()
        assert (
            (study / "results" / "plots" / "serving_power" / "tiny" / "fp32" / "tf")
            .joinpath(f"{exp}.png")
            .stat()
            .st_size
        )
    assert set(table["meter_source"]) == {"estimate"}
    for ext in ("html", "png", "svg"):
        assert (study / "results" / "plots" / f"serving_energy_latency.{ext}").stat().st_size
    assert (study / "results" / "tables" / "summary.parquet").is_file()  # the rest still runs
    dry = snakemake(study, "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout, dry.stdout[-2000:]


def test_changing_a_rate_reruns_only_serving(study: Path) -> None:
    cfg = copy.deepcopy(STUDY)
    cfg["serving"]["rates"] = [4, 8]
    write_config(study, cfg)
    try:
        jobs = planned(study)
    finally:
        write_config(study, STUDY)
    # the findings report reads the serving table (arrival-shaping claim, SLO recommendation)
    assert set(jobs) == {
        "serve",
        "aggregate_serving",
        "provenance_audit",
        "plot_serving_energy_latency",
        "plot_serving_power",
        "findings",
        "all",
    }
    # every experiment's figure is remade (the session reran), the new rate's among them
    assert len(jobs["plot_serving_power"]) == 4
