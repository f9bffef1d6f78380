"""The CLI a user runs by hand on a GPU node: the same code the workflow calls."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import bench_fp32_cpu
from joulebench.cli import main


def test_bench_help_lists_the_configuration_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "joulebench", "bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--model-dir",
        "--precision",
        "--batch-size",
        "--input-len",
        "--output-len",
        "--device",
        "--meter",
        "--repetitions",
        "--min-window-s",
        "--spec-json",
    ):
        assert flag in out


def test_bench_by_hand_writes_a_record_with_provenance(
    tiny_model: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "rec.json"
    started = time.perf_counter()
    rc = main(
        [
            *bench_fp32_cpu(tiny_model),
            "--batch-size",
            "2",
            "--input-len",
            "8",
            "--output-len",
            "4",
            "--warmup",
            "1",
            "--repetitions",
            "2",
            "--min-window-s",
            "0.05",
            "--idle-s",
            "0.2",
            "--sample-hz",
            "50",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    wall_s = time.perf_counter() - started
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["status"] == "ok"
    assert rec["config"]["model"] == "tiny"
    assert rec["meter"]["source"] == "estimate"
    assert len(rec["runs"]) == 2 * 3
    prov = rec["provenance"]
    assert prov["packages"]["torch"].startswith("2.13")
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["host"]["hostname"]
    assert rec["started_at"] < rec["finished_at"]
    # the measurement method, and the power trace beside the record
    info = rec["energy_method"]
    assert info["meter"] == "estimate" and info["sample_hz"] == 50
    assert info["power_fields"] == {"cpu": "model:process_cpu_time"}
    assert 0.2 <= info["idle"]["duration_s"] < wall_s  # a sleep is never shorter than asked
    # the baseline was idle: the estimate's idle_w (10 W) plus at most a tenth of its dynamic
    # range (35 W); model loading or a generation inside it would read far above
    idle_w = info["idle"]["power_w"]
    assert 10.0 <= idle_w < 13.5
    assert info["trace_file"] == "rec.trace.parquet"
    trace = pl.read_parquet(tmp_path / "rec.trace.parquet")
    assert trace.height == info["trace_samples"] > 10
    assert set(trace["device"]) == {"cpu"}
    full = [r for r in rec["runs"] if r["phase"] == "full"]
    assert all(r["direct_energy_j"] > 0 and r["conservation_pct"] is not None for r in full)
    # the record carries net energy as gross − idle power × time (exact net with a fixed idle
    # power, worked out by hand: test_bench.py); here, that the CLI's record holds it
    for r in full:
        assert r["net_energy_j"] == pytest.approx(r["energy_j"] - idle_w * r["time_s"])
    assert "J/token" in capsys.readouterr().out
    rc = main(["provenance", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert re.search(rf"^  config hash +{rec['config_hash']}$", table, re.MULTILINE), table
    assert main(["provenance", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config_hash"] == rec["config_hash"]


def test_bad_precision_exits_with_a_message(tiny_model: Path, tmp_path: Path, caplog) -> None:
    rc = main(
        [
            "bench",
            "--model-dir",
            str(tiny_model),
            "--precision",
            "fp4",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 2
    assert "unknown precision 'fp4'" in caplog.text
    assert not (tmp_path / "r.json").exists()


def test_validate_lists_the_matrix(capsys) -> None:
    from conftest import REPO

    assert main(["validate", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "9 benchmark configurations" in out
    assert "tiny-llama/cpu-int8/transformers/bs16_in64_out32" in out


def test_bad_meter_list_exits_with_a_message(tiny_model: Path, tmp_path: Path, caplog) -> None:
    args = ["bench", "--model-dir", str(tiny_model), "--precision", "fp32", "--meter"]
    rc = main([*args, "nvml,zeus", "--out", str(tmp_path / "r.json")])
    assert rc == 2
    assert "unknown meter 'zeus'" in caplog.text


def test_validate_lists_skipped_combinations(tmp_path: Path, capsys) -> None:
    import yaml
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg |= {"engines": ["transformers", "vllm"], "skip_unsupported": True}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "15 benchmark configurations" in out  # cpu-int8 runs on transformers only
    assert "1 combinations skipped" in out and "tiny-llama/cpu-int8/vllm:" in out


def test_plot_serving_power_help_names_its_inputs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "joulebench", "plot-serving-power", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--trace", "--table", "--out-stem"):
        assert flag in out
