"""Serving measured by hardware meters: a live fake NVML, a live fake powercap tree, and both.

Each session runs as a user runs it — `joulebench serve` in its own process, or the Snakemake
serving stage — against the stand-in server. The fake hardware's power is a square wave on the
host's monotonic clock, so the energy of any window is known exactly (tests/fakehw.py), and each
record is checked against it:

- window energy per device vs the hardware's exact energy between the two counter readings the
  window used (found in the fakes' logs of every read/write, tests/fakehw.py): equal to the
  counter's resolution; the window's stamped edges lie within EDGE_S of those readings (timing,
  checked apart from the energy);
- the trace on its own (conservation) and the attribution's raw shares (closure) vs the same
  known energy: an instant-power trace misses at most (high − low) × the sampling gap around
  each power step (gaps read off the saved trace, after checking the sampler kept at least half
  its rate), a counter trace telescopes.

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
from fakehw import EDGE_S, LivePowercap, SquareWave, counter_reads, fake_nvml_env, read_pair
from joulebench.study.serving_specs import session_specs
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


def max_gap(trace: pl.DataFrame, device: str, interval_s: float) -> float:
    """The longest gap between two samples of ``device``, as the sampler took them.

    Used as a tolerance only once the sampler is shown to have kept at least half its rate
    (a sampler at a tenth of it would otherwise only widen the tolerance).
    """
    t = np.sort(trace.filter(pl.col("device") == device)["t_s"].to_numpy())
    assert t.size >= 0.5 * (t[-1] - t[0]) / interval_s, (device, t.size, t[-1] - t[0])
    return float(np.diff(t).max())


def check_record(
    record: dict[str, Any],
    trace: pl.DataFrame,
    table: pl.DataFrame,
    gpu_reads: list[tuple[float, int]] | None,
    tree: LivePowercap | None,
    interval: float = SERVING["trace_interval_s"],
) -> None:
    """Check a record against the fake hardware: ``gpu_reads`` is NVML's logged counter reads,
    ``interval`` the trace interval the study asked for."""
    w, a = record["window"], record["energy"]["attribution"]
    start, end = w["start_s"], w["end_s"]
    by_device = w["energy_by_device_j"]
    known, tol, trace_tol = 0.0, 0.0, 0.0
    origin = w["load_start_s"]
    assert record["trace"]["interval_s"] == interval
    if gpu_reads is not None:
        # the two counter reads the window's figure is the difference of, and the GPU's exact
        # energy between their instants (the fake's counter truncates to whole mJ)
        t_a, t_b = read_pair(gpu_reads, round(by_device["cuda:0"] * 1000), start, end)
        truth = GPU.between(t_a, t_b)
        assert by_device["cuda:0"] == pytest.approx(truth, abs=0.002)
        assert abs(t_a - start) <= EDGE_S and abs(t_b - end) <= EDGE_S, (t_a, t_b, start, end)
        assert w["sources"]["cuda:0"] == "nvml"
        gap = max_gap(trace, "cuda:0", interval)
        steps = GPU.edges(start, end)
        known += truth
        tol += 0.002
        # instant samples joined by lines: each power step costs at most (high − low) × gap / 2,
        # and the partial intervals at the window's edges at most high × gap each
        trace_tol += (GPU.high_w - GPU.base_w) * gap / 2 * steps + 2 * GPU.high_w * gap
    if tree is not None:
        truth = tree.window_j(by_device, start, end)  # exact, over the written values it used
        assert w["sources"]["rapl:package-0"] == "rapl"
        # the evidence the record keeps: the domains read are the fake tree's
        parts = record["meter"].get("meters", [record["meter"]])
        (rapl,) = [p for p in parts if p["source"] == "rapl"]
        paths = [d["path"] for d in rapl["domains"].values()]
        assert len(paths) == 2 and all(p.startswith(str(tree.root)) for p in paths), paths
        for k in tree.profiles:
            max_gap(trace, k, interval)  # the sampler kept at least half its rate
        known += truth
        tol += 4e-6
        # a counter trace telescopes: only its edges, sampled beside the window's own reads,
        # can differ from the window, each by at most the writer's lag
        trace_tol += 2 * tree.high_w * (tree.max_gap_s + 0.005)
    assert w["energy_j"] == pytest.approx(known, abs=tol)
    # the checks, taken before scaling, against the hardware's known energy
    assert a["trace_j"] == pytest.approx(known, abs=tol + trace_tol)
    assert a["shares_raw_j"] == pytest.approx(known, abs=tol + trace_tol)
    bound_pct = 100 * (2 * tol + trace_tol) / known
    assert abs(a["conservation_pct"]) <= bound_pct and abs(a["closure_pct"]) <= bound_pct
    if bound_pct < 5.0:  # within the study's 5% tolerance by what the hardware did: must pass
        assert a["ok"], a
    # raw and scaled shares are both kept, per request in the table: with the idle part, the raw
    # ones share out what the trace holds, the scaled ones the hardware's energy
    raw = table["energy_attributed_raw_j"].sum() + a["idle_raw_j"]
    assert raw == pytest.approx(known, abs=tol + trace_tol)
    scaled = table["energy_attributed_scaled_j"].sum() + a["idle_scaled_j"]
    assert scaled == pytest.approx(known, abs=tol)
    assert (table["energy_attributed_raw_j"] > 0).all()  # every request was in flight a while
    assert (table["status"] == "ok").all(), table["error"].to_list()
    devices = {"cuda:0"} if gpu_reads is not None else set()
    devices |= {"rapl:package-0", "rapl:dram-0"} if tree is not None else set()
    assert set(trace["device"]) == devices
    assert trace["t_s"].min() <= start - origin and trace["t_s"].max() >= end - origin


CASES = {
    # name: (device, meter, uses NVML, uses the powercap tree)
    "nvml": ("cuda", "auto", True, False),
    "rapl": ("cpu", "auto", False, True),
    "nvml+rapl": ("cuda", ["nvml", "rapl"], True, True),
}


def environment(nvml: bool, log: Path) -> dict[str, str]:
    """A fake GPU for the subprocesses, every counter read of which is logged to ``log``."""
    return fake_nvml_env([GPU], log) if nvml else {}


def gpu_reads(nvml: bool, log: Path) -> list[tuple[float, int]] | None:
    return counter_reads(log, 0) if nvml else None


@pytest.mark.parametrize("case", list(CASES))
def test_joulebench_serve_with_hardware_meters(tiny_model: Path, tmp_path: Path, case: str) -> None:
    device, meter, nvml, rapl = CASES[case]
    root = tmp_path / "powercap"
    log = tmp_path / "nvml-reads.log"
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
            capture_output=True, text=True, env={**os.environ, **environment(nvml, log)},
            check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((out / "poisson_r10.json").read_text())
    assert record["meter_source"] == {"nvml": "nvml", "rapl": "rapl"}.get(case, "nvml+rapl")
    check_record(
        record,
        pl.read_parquet(out / "poisson_r10.trace.parquet"),
        pl.read_parquet(out / "poisson_r10.parquet"),
        gpu_reads(nvml, log),
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
        None,
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
    log = tmp_path / "nvml-reads.log"
    write_config(tmp_path, serving_study(device, meter, root))
    session = "results/serving/tiny/fp32/standin"
    target = "results/plots/serving_power/tiny/fp32/standin/poisson_r10.png"
    with LivePowercap(root, PACKAGE, DRAM) as tree:
        run = snakemake(tmp_path, target, env=environment(nvml, log))
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / session
    record = json.loads((out / "poisson_r10.json").read_text())
    check_record(
        record,
        pl.read_parquet(out / "poisson_r10.trace.parquet"),
        pl.read_parquet(out / "poisson_r10.parquet"),
        gpu_reads(nvml, log),
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
    from joulebench.serving.session import session_meter
    from joulebench.study import config as jb_config

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
            assert m.total_j == pytest.approx(tree.window_j(m.energy_j, m.start_s, m.end_s))


@pytest.mark.slow
def test_make_study_serving_stage_measures_rapl(tmp_path: Path) -> None:
    """The default study's serving stage (real `transformers serve`) through Snakemake, on RAPL."""
    root = tmp_path / "powercap"
    from joulebench.study import config as jb_config

    write_config(tmp_path, default_study_with(root))
    interval = jb_config.validate(default_study_with(root))["serving"]["trace_interval_s"]
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
            None,
            tree,
            interval,
        )
