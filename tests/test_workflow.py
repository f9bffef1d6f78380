"""End to end through the snakemake CLI on a tiny study, then incremental dry runs."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from conftest import NO_POWERCAP, REPO, TINY_MODEL, snakemake_argv
from joulebench.plots import FIGURES
from test_config import BAD_VALUES, with_change

pytestmark = pytest.mark.slow

STUDY: dict[str, Any] = {
    "study": "e2e",
    "device": "cpu",
    "models": [TINY_MODEL],
    "precisions": ["fp32", "bf16"],
    "batch_sizes": [1, 8],
    "input_lengths": [16],
    "output_lengths": [8],
    # auto on the CPU: the estimate on every host (no RAPL under NO_POWERCAP)
    "measurement": {
        "warmup_runs": 1,
        "repetitions": 2,
        "min_window_s": 0.2,
        "powercap_root": NO_POWERCAP,
    },
}


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        snakemake_argv(workdir, "--cores", "2", *args),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write_config(workdir: Path, cfg: dict[str, Any]) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    write_config(workdir, STUDY)
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def planned(workdir: Path, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Dry run: the outputs each rule would (re)make."""
    run = snakemake(workdir, "--dry-run", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in run.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
            jobs.setdefault(rule, [])
        elif (m := re.match(r"^\s+output: (.+)$", line)) and rule:
            jobs[rule].append(m.group(1).split(",")[0])
    return jobs


def test_tables_plots_and_records_exist(study: Path) -> None:
    results = study / "results"
    for name in ("tables/summary.parquet", "tables/summary.csv", "tables/measurements.parquet"):
        assert (results / name).stat().st_size > 0
    for fig in ("energy_per_token_vs_batch", "phase_energy_per_request"):
        assert "vega" in (results / "plots" / f"{fig}.html").read_text()
        assert (results / "plots" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    records = sorted((results / "records").rglob("*.json"))
    assert len(records) == 4
    for record in records:  # every run's power trace beside its record, and its chart
        assert record.with_suffix(".trace.parquet").stat().st_size > 0
        chart = results / "plots" / "power" / record.relative_to(results / "records")
        assert "Power over time" in chart.with_suffix(".html").read_text()
        assert chart.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((results / "benchmarks" / "benchmark").rglob("*.tsv"))) == 4
    assert (study / "logs" / "aggregate.log").is_file()


def test_numbers_are_sane(study: Path) -> None:
    summary = pl.read_parquet(study / "results" / "tables" / "summary.parquet")
    assert summary.height == 4 * 3
    assert set(summary["meter_source"]) == {"estimate"}
    measured = summary.filter(pl.col("phase") != "decode")
    assert (measured["energy_j_mean"] > 0).all()
    assert (measured["tokens_per_s_mean"] > 0).all()
    decode = summary.filter(phase="decode").sort("batch_size")
    for precision in ("fp32", "bf16"):
        j = decode.filter(precision=precision)["j_per_token_mean"].to_list()
        assert j[-1] < j[0], f"{precision}: decode J/token did not fall with batching: {j}"
    assert set(summary["host"]) and summary["git_commit"].dtype == pl.String
    # idle baseline, direct phases and the conservation check reach the summary
    assert (summary["idle_power_w_mean"] > 9.99).all()  # the estimate's idle_w, at least
    assert (summary["net_energy_j_mean"] < summary["energy_j_mean"]).all()
    phases = summary.filter(pl.col("phase") != "full")
    assert phases["direct_energy_j_mean"].null_count() == 0
    assert phases["direct_vs_subtraction_pct_mean"].null_count() == 0
    full = summary.filter(phase="full")
    assert (full["conservation_pct_mean"].abs() < 10).all()  # same model, sampled at 20 Hz
    assert set(summary["power_field"]) == {"model:process_cpu_time"}


def test_nothing_to_do_when_unchanged(study: Path) -> None:
    assert planned(study) == {}


def test_changing_one_batch_size_reruns_only_its_job(study: Path) -> None:
    cfg = copy.deepcopy(STUDY)
    cfg["batch_sizes"] = [1, 4]
    write_config(study, cfg)
    try:
        jobs = planned(study)
    finally:
        write_config(study, STUDY)
    assert sorted(jobs["benchmark"]) == [
        "results/records/tiny/bf16/transformers/bs4_in16_out8.json",
        "results/records/tiny/fp32/transformers/bs4_in16_out8.json",
    ]
    assert sorted(jobs["plot_power"]) == [
        "results/plots/power/tiny/bf16/transformers/bs4_in16_out8.html",
        "results/plots/power/tiny/fp32/transformers/bs4_in16_out8.html",
    ]
    assert set(jobs) == {"benchmark", "aggregate", "plot", "plot_power", "findings", "all"}


def test_adding_a_precision_runs_only_its_variant_and_jobs(study: Path) -> None:
    cfg = copy.deepcopy(STUDY)
    cfg["precisions"] = ["fp32", "bf16", "cpu-int8"]
    write_config(study, cfg)
    try:
        jobs = planned(study)
    finally:
        write_config(study, STUDY)
    assert jobs["describe_variant"] == ["results/variants/tiny/cpu-int8.json"]
    assert all("/cpu-int8/" in out for out in jobs["benchmark"])
    assert len(jobs["benchmark"]) == 2
    assert "prepare_model" not in jobs


def test_changing_a_measurement_setting_reruns_every_benchmark(study: Path) -> None:
    cfg = copy.deepcopy(STUDY)
    cfg["measurement"] = {**STUDY["measurement"], "repetitions": 3}
    write_config(study, cfg)
    try:
        jobs = planned(study)
    finally:
        write_config(study, STUDY)
    assert len(jobs["benchmark"]) == 4
    assert "prepare_model" not in jobs and "describe_variant" not in jobs


def edited_package(tmp_path: Path, relpath: str) -> dict[str, str]:
    """A copy of the package with ``relpath`` edited, as the environment that imports it."""
    shutil.copytree(
        REPO / "workflow" / "joulebench",
        tmp_path / "joulebench",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "schemas")
    edited = tmp_path / "joulebench" / relpath
    edited.write_text(edited.read_text() + "\n# an edit\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_an_engine_code_change_reruns_every_benchmark_only(study: Path, tmp_path: Path) -> None:
    jobs = planned(study, env=edited_package(tmp_path, "engines/hf_transformers.py"))
    assert len(jobs["benchmark"]) == 4 == len(jobs["plot_power"])  # new traces, new charts
    assert set(jobs) == {"benchmark", "aggregate", "plot", "plot_power", "findings", "all"}


def test_a_plotting_code_change_reruns_only_plots_and_findings(study: Path, tmp_path: Path) -> None:
    jobs = planned(study, env=edited_package(tmp_path, "plots.py"))
    assert set(jobs) == {"plot", "plot_power", "findings", "all"}
    assert len(jobs["plot"]) == len(FIGURES) and len(jobs["plot_power"]) == 4


def test_report_is_self_contained_with_figures_and_table(study: Path) -> None:
    run = snakemake(study, "--report", "report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (study / "report.html").read_text()
    assert "summary.csv" in html and "energy_per_token_vs_batch" in html
    assert "e2e" in html, "the study name from workflow.rst"
    assert 'src="http' not in html, "a self-contained report loads nothing from the web"


def test_slurm_template_profile_spells_gpus_both_ways(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "gpu.yaml").read_text())
    write_config(tmp_path, cfg)
    profile = ["--workflow-profile", str(REPO / "profiles" / "slurm")]
    site = {"JOULEBENCH_SLURM_PARTITION": "gpu-part", "JOULEBENCH_SLURM_GPU_MODEL": "h100"}

    def benchmark_resources(env: dict[str, str]) -> list[str]:
        run = snakemake(tmp_path, "--dry-run", *profile, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        blocks = run.stdout.split("rule benchmark:")[1:]
        assert len(blocks) == 18
        return [re.search(r"resources: (.*)", b).group(1) for b in blocks]

    for res in benchmark_resources(site):
        assert "gpu=1" in res and "gpu_model=h100" in res and "gres" not in res
        assert "slurm_partition=gpu-part" in res and "cpus_per_task=8" in res
    for res in benchmark_resources({**site, "JOULEBENCH_SLURM_GPU": "gres"}):
        assert "gpu=0" in res and "gres=gpu:h100:1" in res
    bad = snakemake(tmp_path, "--dry-run", *profile, env={"JOULEBENCH_SLURM_GPU": "cuda"})
    assert bad.returncode != 0
    assert "JOULEBENCH_SLURM_GPU='cuda' is not allowed; allowed: gpus, gres" in bad.stderr


def test_forecast_of_the_gpu_study_groups_benchmarks(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "gpu.yaml").read_text())
    write_config(tmp_path, cfg)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "joulebench",
            "forecast",
            "--results",
            str(tmp_path / "results"),
            "--",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JOULEBENCH_SLURM_GROUP": "9"},
    ).stdout
    assert re.search(r"^benchmark\s+18\s+sched\s+1\s+9\.00\s+9\.00$", out, re.MULTILINE), out
    # 18 local power charts (one per benchmark) add jobs, not scheduler submissions
    assert re.search(r"^plot_power\s+18\s+local\s", out, re.MULTILINE), out
    assert "jobs: 50; scheduler submissions: 4 (group bench: 2)" in out


@pytest.mark.parametrize(("path", "value", "key", "fragment"), BAD_VALUES)
def test_bad_config_fails_before_any_job(
    tmp_path: Path, path: str, value: Any, key: str, fragment: str
) -> None:
    write_config(tmp_path, with_change(path, value))
    run = snakemake(tmp_path)
    output = run.stderr + run.stdout
    assert run.returncode != 0
    assert f"invalid configuration: config key '{key}'" in output
    assert fragment in output
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "logs").exists()


def test_killed_study_leaves_no_partial_output_and_resumes(tmp_path: Path) -> None:
    """SIGTERM to Snakemake in the middle of a benchmark; a rerun completes the study."""
    cfg = copy.deepcopy(STUDY)
    cfg["measurement"] = {**STUDY["measurement"], "min_window_s": 1.0}
    write_config(tmp_path, cfg)
    proc = subprocess.Popen(
        snakemake_argv(tmp_path, "--cores", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    logs = tmp_path / "logs" / "benchmark"
    deadline = time.monotonic() + 120
    while not any("measuring" in p.read_text() for p in logs.rglob("*.log")):
        assert time.monotonic() < deadline, "no benchmark started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    records = tmp_path / "results" / "records"
    for path in records.rglob("*"):  # whatever exists is complete, nothing is a temp file
        assert not path.name.startswith("."), path
        if path.is_file():
            json.loads(path.read_text())
    rerun = snakemake(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    finished = sorted(records.rglob("*.json"))
    assert len(finished) == 4
    assert all(json.loads(p.read_text())["status"] == "ok" for p in finished)


def test_a_tensor_parallel_job_asks_for_that_many_gpus(tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "gpu.yaml").read_text())
    cfg |= {"engines": ["vllm"], "precisions": ["bf16"], "batch_sizes": [8]}
    cfg |= {"tensor_parallel_sizes": [1, 2], "models": cfg["models"][:1]}
    write_config(tmp_path, cfg)
    run = snakemake(tmp_path, "--dry-run")
    assert run.returncode == 0, run.stderr[-3000:]
    asked = {
        re.search(r"point=(\S+)", block).group(1): re.search(r"gpu=(\d+)", block).group(1)
        for block in run.stdout.split("rule benchmark:")[1:]
    }
    assert asked == {"bs8_in512_out256": "1", "bs8_in512_out256_tp2": "2"}
