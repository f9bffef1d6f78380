"""The GPU check's command, config and wheel list (tests/perf/gpu_study.sh) stay valid on a CPU.

The config's matrix and DAG are compared with what the issue asks for; the wheel list with this
environment's pins and the dependency closure; and the whole command runs in its dry-run mode
(the tests' fake NVML, tiny shapes), its cross-check compared with the fake GPU's exact energy.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO
from fakehw import SquareWave, counter_reads, fake_nvml_env, read_pair
from joulebench.study import config, matrix
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(REPO / "tests" / "perf"))
import gpu_crosscheck
import gpu_wheels

GPU_CHECK = REPO / "config" / "gpu-check.yaml"


def test_gpu_check_matrix_is_the_issues() -> None:
    cfg = config.load(GPU_CHECK)
    ids = {spec.config_id for spec in matrix.expand(cfg)}
    one_b = {
        f"llama-3.2-1b/{p}/transformers/bs{b}_in128_out32"
        for p in ("fp32", "fp16", "bf16", "bnb-int8", "bnb-nf4")
        for b in (1, 8, 64)
    }
    eight_b = {f"llama-3.1-8b/bf16/transformers/bs{b}_in128_out32" for b in (8, 64)}
    assert ids == one_b | eight_b
    serving = cfg["serving"]
    assert serving["models"] == ["llama-3.2-1b"]
    assert {a["name"] for a in serving["arrivals"]} == {"poisson", "grouped"}
    assert len(serving["rates"]) == 2
    assert cfg["figure_formats"] == ["html"]


def test_gpu_check_dag(tmp_path: Path) -> None:
    """Snakemake's dry run of the GPU check: the jobs per rule the DAG will run."""
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    args = ["-d", str(tmp_path), "--configfile", str(GPU_CHECK), "-n", "--quiet", "rules"]
    out = subprocess.run(
        [*snakemake, *args, "--cores", "16"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs["prepare_model"] == "2"
    assert jobs["describe_variant"] == "6"  # 1B x 5 precisions, 8B x bf16
    assert jobs["benchmark"] == jobs["plot_power"] == "17"
    assert jobs["serve"] == "1"
    assert jobs["plot_serving_power"] == "4"
    assert "quantize_variant" not in jobs


def test_wheel_list_holds_the_pins_and_their_needs() -> None:
    wanted = dict(r.split("==") for r in gpu_wheels.requirements())
    wanted = {canonicalize_name(k): v for k, v in wanted.items()}
    # every pin this environment also has is the same version
    for name, version in wanted.items():
        try:
            assert metadata.version(name) == version, name
        except metadata.PackageNotFoundError:
            assert name in {"zeus", "tyro", "docstring-parser", "typeguard", "bitsandbytes"}
    # joulebench's own needs and theirs are carried, on the node, or left out on purpose
    on_node = {canonicalize_name(n) for n in gpu_wheels.NODE_HAS}
    left_out = {canonicalize_name(n) for n in gpu_wheels.LEFT_OUT}
    todo = [Requirement(r) for r in metadata.requires("joulebench") or []]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        assert name in wanted or name in on_node or name in left_out, f"{name} is not carried"
        if name in wanted:
            todo += [Requirement(r) for r in metadata.requires(name) or []]


def window(seconds: float, **diffs: float) -> dict[str, float]:
    return {"time_s": seconds, **{f"d_{k}_pct": v for k, v in diffs.items()}}


def test_cross_check_targets() -> None:
    met = [window(1.5, zeus=1.0, oop=-1.5), window(2.0, zeus=-4.9, oop=0.5), window(0.2, zeus=40)]
    assert gpu_crosscheck.verdict(met, ["zeus", "oop"], 1.0) == []
    one_far = [*met, window(1.0, zeus=5.5, oop=0.0)]
    assert gpu_crosscheck.verdict(one_far, ["zeus"], 1.0) == [
        "zeus: a >= 1 s window differs by +5.50%"
    ]
    shifted = [window(1.2, oop=2.5), window(1.3, oop=2.1), window(1.4, oop=-1.0)]
    assert gpu_crosscheck.verdict(shifted, ["oop"], 1.0) == [
        "oop: median difference +2.10% is beyond ±2%"
    ]
    assert gpu_crosscheck.verdict([window(0.5, oop=0.0)], ["oop"], 1.0) == [
        "oop: no window lasted >= 1 s"
    ]


def test_out_of_process_counter_and_power_over_a_window() -> None:
    ts = [0.0, 0.1, 0.2, 0.3]
    energy = [10.0, 12.0, 16.0, 16.5]
    assert gpu_crosscheck.interpolate(ts, energy, 0.15) == pytest.approx(14.0)
    assert gpu_crosscheck.interpolate(ts, energy, 0.3) == pytest.approx(16.5)
    with pytest.raises(ValueError, match="outside"):
        gpu_crosscheck.interpolate(ts, energy, 0.31)
    # constant 200 W, then 400 W: the integral over [0.05, 0.25] by hand
    power = [200.0, 200.0, 400.0, 400.0]
    expected = 0.05 * 200 + 0.1 * 300 + 0.05 * 400
    assert gpu_crosscheck.power_integral(ts, power, 0.05, 0.25) == pytest.approx(expected)


@pytest.mark.slow
def test_dry_run_of_the_gpu_check(tmp_path: Path) -> None:
    wave = SquareWave(150.0, 410.0, 0.3)
    reads = tmp_path / "reads.log"  # every counter read of every process, with its instant
    env = {**os.environ, **fake_nvml_env([wave], log=reads)}
    env["GPU_STUDY_WORKDIR"] = str(tmp_path / "work")
    env["PYTHON"] = sys.executable
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(REPO / "tests" / "perf" / "gpu_study.sh"), str(out), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "anchor.csv",
        "crosscheck.csv",
        "findings.md",
        "gpu_study.log",
        "gpu_study.tar.gz",
        "serving.csv",
        "summary.csv",
    ]
    # the cross-check against the fake GPU's exact energy over each window
    with (out / "crosscheck.csv").open() as f:
        windows = list(csv.DictReader(f))
    assert windows
    step_j = (wave.high_w - wave.base_w) / 100.0  # the reader's 100 Hz: one sample per edge
    log = counter_reads(reads, 0)
    for w in windows:
        start, end, got = float(w["start_s"]), float(w["end_s"]), float(w["joulebench_j"])
        # joulebench's figure is the difference of two counter reads the fake GPU logged, and
        # the wave's exact energy between those reads, to the counter's 1 mJ
        t_a, t_b = read_pair(log, round(got * 1000), start, end)
        assert got == pytest.approx(wave.between(t_a, t_b), abs=2e-3)
        assert abs(t_a - start) < 0.25 and abs(t_b - end) < 0.25  # the reads at its edges
        exact = wave.between(start, end)
        assert abs(float(w["oop_j"]) - exact) <= 2 * step_j
    # the anchor row of the 8B stand-in, beside ML.ENERGY's figure at batch 8
    with (out / "anchor.csv").open() as f:
        (anchor,) = list(csv.DictReader(f))
    assert anchor["batch_size"] == "8" and anchor["mlenergy_vllm_h100_j_per_token"] == "0.455"
    decode_j = float(anchor["joulebench_decode_j_per_token"])
    # the anchor is the mean decode J/token of the 8B stand-in's repetitions, and each
    # repetition's decode energy (full window − prefill window, per call) lies where the fake
    # GPU puts it: between base_w·t_full − high_w·t_prefill and high_w·t_full − base_w·t_prefill
    tidy = pl.read_parquet(tmp_path / "work" / "results" / "tables" / "measurements.parquet")
    reps = tidy.filter(model="tiny-b", precision="bf16", batch_size=8).pivot(
        on="phase", index="rep", values=["time_s", "tokens", "j_per_token"]
    )
    assert reps.height == 2  # gpu_study_dry.yaml: 2 repetitions
    assert decode_j == pytest.approx(reps["j_per_token_decode"].mean(), rel=1e-6)
    full_j = float(anchor["joulebench_full_j_per_token"])
    assert full_j == pytest.approx(reps["j_per_token_full"].mean(), rel=1e-6)
    assert float(anchor["ratio_decode"]) == pytest.approx(decode_j / 0.455, rel=1e-6)
    slack_j = (wave.high_w - wave.base_w) * 0.002  # the counter read within 2 ms of the clock
    for r in reps.iter_rows(named=True):
        t_full, t_prefill, tokens = r["time_s_full"], r["time_s_prefill"], r["tokens_decode"]
        assert tokens == 8 * (8 - 1)  # batch 8, 8 output tokens, the first made by prefill
        low = wave.base_w * t_full - wave.high_w * t_prefill - slack_j
        high = wave.high_w * t_full - wave.base_w * t_prefill + slack_j
        assert low / tokens <= r["j_per_token_decode"] <= high / tokens, r
    assert decode_j > 0
    report = (out / "findings.md").read_text()
    assert report.count("\n## ") >= 3
    with tarfile.open(out / "gpu_study.tar.gz") as tar:
        names = tar.getnames()
    assert "results/plots/energy_per_token_vs_batch.html" in names
    assert not [n for n in names if n.endswith(".png")]
    records = [n for n in names if n.startswith("results/records/") and n.endswith(".json")]
    assert len(records) == 3
    log = (out / "gpu_study.log").read_text()
    assert "targets met" in log and json.dumps("Fake H100")[1:-1] in log


def test_a_real_run_refuses_to_start_with_the_fake_nvml_in_reach(tmp_path: Path) -> None:
    """Without --dry-run the script measures the real GPU: the tests' fake must not be found."""
    env = {**os.environ, "JOULEBENCH_FAKE_NVML": '{"profiles": []}'}
    run = subprocess.run(
        ["bash", str(REPO / "tests" / "perf" / "gpu_study.sh"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "read the tests' fake NVML and record it as nvml" in run.stdout
    assert "installing the wheels" not in run.stdout  # refused before anything else
