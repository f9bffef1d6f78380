"""Serving measured by hardware meters: a live fake NVML, a live fake powercap tree, and both.

Each session runs as a user runs it — `joulebench serve` in its own process, or the Snakemake
serving stage — against the stand-in server. The fake hardware's power is a square wave on the
host's monotonic clock, so the energy of any window is known exactly (tests/fakehw.py), and each
record is checked against it:

- window energy vs the hardware's energy between the window's edges: NVML's counter is read at
  the edge, within 1% + 20 ms of peak power; RAPL's counter lags the truth by at most the
  writer's longest gap (measured) at each edge;
- the trace on its own (conservation) and the attribution's raw shares (closure) vs the same
  known energy: an instant-power trace misses at most (high − low) × the sampling gap around
  each power step (gaps read off the saved trace), a counter trace telescopes.

They fail when the NVML or RAPL serving path is broken (e.g. a missing NVML counter read).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import REPO, TINY_MODEL
from fakehw import LivePowercap, SquareWave, fake_nvml_env
from joulebench.serving import session_specs
from test_serving_session import STANDIN, study
from test_workflow import snakemake, write_config

GPU = SquareWave(150.0, 350.0, 0.5)
PACKAGE, DRAM = SquareWave(20.0, 60.0, 0.3), SquareWave(4.0, 6.0, 0.7)

SERVING: dict[str, Any] = {
    "requests": 10,
    "warmup_requests": 2,
    "rates": [10],
    "arrivals": [{"name": "poisson", "process": "poisson"}],
    "idle_s": 0.2,
    "trace_interval_s": 0.01,
    "attribution_tolerance": 0.05,
}


def max_gap(trace: pl.DataFrame, device: str) -> float:
    """The longest gap between two samples of ``device``, as the sampler took them."""
    t = np.sort(trace.filter(pl.col("device") == device)["t_s"].to_numpy())
    return float(np.diff(t).max()) if t.size > 1 else float("inf")


def check_record(
    record: dict[str, Any],
    trace: pl.DataFrame,
    table: pl.DataFrame,
    nvml: bool,
    tree: LivePowercap | None,
) -> None:
    w, a = record["window"], record["energy"]["attribution"]
    start, end = w["start_s"], w["end_s"]
    by_device = w["energy_by_device_j"]
    known, tol, trace_tol = 0.0, 0.0, 0.0
    origin = w["load_start_s"]
    if nvml:
        truth = GPU.between(start, end)
        # the counter is read at each edge: 1% + 20 ms of peak power covers the read's delay
        assert by_device["cuda:0"] == pytest.approx(truth, rel=0.01, abs=GPU.high_w * 0.02)
        assert w["sources"]["cuda:0"] == "nvml"
        gap = max_gap(trace, "cuda:0")
        steps = GPU.edges(start, end)
        known += truth
        tol += 0.01 * truth + GPU.high_w * 0.02
        # instant samples joined by lines: each power step costs at most (high − low) × gap / 2,
        # and the partial intervals at the window's edges at most high × gap each
        trace_tol += (GPU.high_w - GPU.base_w) * gap / 2 * steps + 2 * GPU.high_w * gap
    if tree is not None:
        truth = tree.between(start, end)
        lag = tree.max_gap_s + 0.005
        rapl_j = by_device["rapl:package-0"] + by_device["rapl:dram-0"]
        assert rapl_j == pytest.approx(truth, abs=2 * tree.high_w * lag)
        assert w["sources"]["rapl:package-0"] == "rapl"
        known += truth
        tol += 2 * tree.high_w * lag
        trace_tol += 2 * tree.high_w * lag
    assert w["energy_j"] == pytest.approx(known, abs=tol)
    # the checks, taken before scaling, against the hardware's known energy
    assert a["trace_j"] == pytest.approx(known, abs=tol + trace_tol)
    assert a["shares_raw_j"] == pytest.approx(known, abs=tol + trace_tol)
    bound_pct = 100 * (2 * tol + trace_tol) / known
    assert abs(a["conservation_pct"]) <= bound_pct and abs(a["closure_pct"]) <= bound_pct
    assert a["ok"] == (max(abs(a["closure_pct"]), abs(a["conservation_pct"])) <= 5.0)
    # raw and scaled shares are both kept; the scaled ones add up to the meter's figure
    assert table["energy_attributed_raw_j"].sum() == pytest.approx(a["requests_raw_j"])
    assert a["requests_scaled_j"] + a["idle_scaled_j"] == pytest.approx(w["energy_j"])
    assert (table["status"] == "ok").all(), table["error"].to_list()
    devices = {"cuda:0"} if nvml else set()
    devices |= {"rapl:package-0", "rapl:dram-0"} if tree is not None else set()
    assert set(trace["device"]) == devices
    assert trace["t_s"].min() <= start - origin and trace["t_s"].max() >= end - origin


CASES = {
    # name: (device, meter, uses NVML, uses the powercap tree)
    "nvml": ("cuda", "auto", True, False),
    "rapl": ("cpu", "auto", False, True),
    "nvml+rapl": ("cuda", ["nvml", "rapl"], True, True),
}


def environment(nvml: bool) -> dict[str, str]:
    return fake_nvml_env([GPU]) if nvml else {}


@pytest.mark.parametrize("case", list(CASES))
def test_joulebench_serve_with_hardware_meters(tiny_model: Path, tmp_path: Path, case: str) -> None:
    device, meter, nvml, rapl = CASES[case]
    root = tmp_path / "powercap"
    cfg = study(
        tiny_model,
        measurement={"meter": meter, "powercap_root": str(root)},
        device=device,
        **SERVING,
    )
    (spec,) = session_specs(cfg)
    out = tmp_path / "out"
    with LivePowercap(root, PACKAGE, DRAM) as tree:
        run = subprocess.run(
            [sys.executable, "-m", "joulebench", "serve", "--model-dir", str(tiny_model),
             "--spec-json", json.dumps(spec.to_dict()), "--out-dir", str(out)],
            capture_output=True, text=True, env={**os.environ, **environment(nvml)}, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((out / "poisson_r10.json").read_text())
    assert record["meter_source"] == {"nvml": "nvml", "rapl": "rapl"}.get(case, "nvml+rapl")
    check_record(
        record,
        pl.read_parquet(out / "poisson_r10.trace.parquet"),
        pl.read_parquet(out / "poisson_r10.parquet"),
        nvml,
        tree if rapl else None,
    )


def test_external_server_on_this_hosts_rapl(tiny_model: Path, tmp_path: Path) -> None:
    """An external server measured by this host's RAPL: the record says where energy was read."""
    from fakeserver import FakeServerProcess

    root = tmp_path / "powercap"
    with LivePowercap(root, PACKAGE, DRAM) as tree, FakeServerProcess(token_delay_s=0.02) as srv:
        cfg = study(tiny_model, srv.url, measurement={"powercap_root": str(root)}, **SERVING)
        (spec,) = session_specs(cfg)
        run = subprocess.run(
            [sys.executable, "-m", "joulebench", "serve", "--model-dir", str(tiny_model),
             "--spec-json", json.dumps(spec.to_dict()), "--out-dir", str(tmp_path / "out")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "poisson_r10.json").read_text())
    assert record["meter_source"] == "rapl"
    assert record["measured"]["server_may_run_elsewhere"] is True
    assert "may run elsewhere" in record["measured"]["what"]
    out = tmp_path / "out"
    check_record(
        record,
        pl.read_parquet(out / "poisson_r10.trace.parquet"),
        pl.read_parquet(out / "poisson_r10.parquet"),
        False,
        tree,
    )


def serving_study(device: str, meter: Any, root: Path) -> dict[str, Any]:
    return {
        "study": "serving-meters",
        "device": device,
        "models": [TINY_MODEL],
        "precisions": ["fp32"],
        "batch_sizes": [1],
        "input_lengths": [8],
        "output_lengths": [4],
        "measurement": {"meter": meter, "powercap_root": str(root)},
        "serving": {"servers": [STANDIN], "input_len": 8, "output_len": 4, **SERVING},
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_snakemake_serving_stage_with_hardware_meters(tmp_path: Path, case: str) -> None:
    device, meter, nvml, rapl = CASES[case]
    root = tmp_path / "powercap"
    write_config(tmp_path, serving_study(device, meter, root))
    session = "results/serving/tiny/fp32/standin"
    target = "results/plots/serving_power/tiny/fp32/standin/poisson_r10.png"
    with LivePowercap(root, PACKAGE, DRAM) as tree:
        run = snakemake(tmp_path, target, env=environment(nvml))
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / session
    record = json.loads((out / "poisson_r10.json").read_text())
    check_record(
        record,
        pl.read_parquet(out / "poisson_r10.trace.parquet"),
        pl.read_parquet(out / "poisson_r10.parquet"),
        nvml,
        tree if rapl else None,
    )
    assert (tmp_path / target).stat().st_size


def default_study_with(root: Path) -> dict[str, Any]:
    """`make study`'s config, with only the powercap root pointed at ``root``."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["measurement"]["powercap_root"] = str(root)
    return cfg


def test_default_study_serves_with_rapl_where_it_is_readable(tmp_path: Path) -> None:
    """`make study`'s config on a host with readable RAPL: its serving sessions measure RAPL.

    The session's meter is built by the serving stage's own code from the spec Snakemake
    passes, and measures the live tree's energy (the slow test below runs the stage itself).
    """
    from joulebench import config as jb_config
    from joulebench.serving import session_meter

    root = tmp_path / "powercap"
    with LivePowercap(root, PACKAGE, DRAM) as tree:
        sessions = session_specs(jb_config.validate(default_study_with(root)))
        assert sessions
        for spec in sessions:
            meter = session_meter(spec, server_pid=os.getpid())
            try:
                assert meter.source == "rapl"
                meter.begin_window("w")
                time.sleep(0.3)
                m = meter.end_window("w")
            finally:
                meter.close()
            lag = tree.max_gap_s + 0.005
            assert m.total_j == pytest.approx(
                tree.between(m.start_s, m.end_s), abs=2 * tree.high_w * lag
            )


@pytest.mark.slow
def test_make_study_serving_stage_measures_rapl(tmp_path: Path) -> None:
    """The default study's serving stage (real `transformers serve`) through Snakemake, on RAPL."""
    root = tmp_path / "powercap"
    write_config(tmp_path, default_study_with(root))
    with LivePowercap(root, PACKAGE, DRAM) as tree:
        run = snakemake(tmp_path, "results/serving/tiny-llama/bf16/tfserve/poisson_r2.json")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "results" / "serving" / "tiny-llama" / "bf16" / "tfserve"
    records = sorted(out.glob("*.json"))
    assert [p.stem for p in records] == ["grouped_r2", "grouped_r5", "poisson_r2", "poisson_r5"]
    for path in records:
        record = json.loads(path.read_text())
        assert record["meter_source"] == "rapl"
        check_record(
            record,
            pl.read_parquet(path.with_suffix(".trace.parquet")),
            pl.read_parquet(path.with_suffix(".parquet")),
            False,
            tree,
        )
