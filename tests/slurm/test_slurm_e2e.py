"""A tiny study through `--executor slurm` on the real one-node SLURM of .ci/slurm.sh.

Round 1 uses profiles/slurm-ci (GPU asked as --gpus=h100:1, two benchmarks grouped into one
allocation); round 2 adds a batch size and reruns through the profiles/slurm template with the
--gres spelling, so both spellings reach a real scheduler. Run with `make test-slurm`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from conftest import REPO, TINY_MODEL, snakemake_argv

pytestmark = pytest.mark.slurm

STUDY: dict[str, Any] = {
    "study": "slurm-e2e",
    "device": "cpu",
    "models": [TINY_MODEL],
    "precisions": ["fp32"],
    "batch_sizes": [1, 4],
    "input_lengths": [16],
    "output_lengths": [8],
    "measurement": {"warmup_runs": 1, "repetitions": 2, "min_window_s": 0.2},
}
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None):
    started = time.monotonic()
    run = subprocess.run(
        snakemake_argv(workdir, *args),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    print(f"snakemake {' '.join(args)}: {time.monotonic() - started:.1f} s")
    return run


def write_config(workdir: Path, cfg: dict[str, Any]) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def records(workdir: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: json.loads(p.read_text())
        for p in sorted((workdir / "results" / "records").rglob("*.json"))
    }


@pytest.fixture(scope="module")
def cluster() -> None:
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert state.returncode == 0 and "idle" in state.stdout, (
        f"no idle SLURM node (sinfo: {state.stdout or state.stderr!r}); run .ci/slurm.sh up"
    )


@pytest.fixture(scope="module")
def round1(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("slurm-study")
    write_config(workdir, STUDY)
    run = snakemake(workdir, "--workflow-profile", str(REPO / "profiles" / "slurm-ci"))
    assert run.returncode == 0, run.stderr[-4000:]
    return workdir, run.stderr


def test_round1_runs_every_job_through_slurm(round1: tuple[Path, str]) -> None:
    workdir, log = round1
    job_ids = SUBMITTED.findall(log)
    assert len(job_ids) == 2, f"expected prepare_model + one grouped benchmark job: {job_ids}"
    summary = pl.read_parquet(workdir / "results" / "tables" / "summary.parquet")
    assert sorted(set(summary["batch_size"])) == [1, 4]
    for fig in ("energy_per_token_vs_batch", "phase_energy_per_request"):
        assert (workdir / "results" / "plots" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"


def test_records_carry_the_slurm_job_and_its_gpu(round1: tuple[Path, str]) -> None:
    workdir, log = round1
    recs = records(workdir)
    assert set(recs) == {"bs1_in16_out8", "bs4_in16_out8"}
    slurm = [r["provenance"]["slurm"] for r in recs.values()]
    assert all(s and s["partition"] == "debug" and s["node"] == "localhost" for s in slurm)
    # grouped: both benchmarks ran, one after the other, in one allocation with one GPU
    assert len({s["job_id"] for s in slurm}) == 1
    job_id = slurm[0]["job_id"]
    assert job_id in SUBMITTED.findall(log)
    assert slurm[0]["gpus_on_node"] == "1"
    job = scontrol(job_id)
    assert job["TresPerJob"] == "gres:gpu:h100:1", job  # the --gpus=h100:1 spelling
    assert job["NumCPUs"] == "2" and job["JobState"] == "COMPLETED"
    for rec in recs.values():
        assert rec["provenance"]["accelerator_env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_provenance_command_shows_the_slurm_job(round1: tuple[Path, str]) -> None:
    workdir, _ = round1
    path = next((workdir / "results" / "records").rglob("bs1_in16_out8.json"))
    out = subprocess.run(
        [sys.executable, "-m", "joulebench", "provenance", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    job_id = json.loads(path.read_text())["provenance"]["slurm"]["job_id"]
    assert re.search(rf"^\[slurm\]\n  job id\s+{job_id}$", out, re.MULTILINE), out


def test_round2_template_profile_gres_spelling_reruns_only_the_new_job(
    round1: tuple[Path, str],
) -> None:
    workdir, _ = round1
    before = {k: r["started_at"] for k, r in records(workdir).items()}
    write_config(workdir, {**STUDY, "batch_sizes": [1, 4, 8]})
    env = {
        "JOULEBENCH_SLURM_PARTITION": "debug",
        "JOULEBENCH_SLURM_GPU": "gres",
        "JOULEBENCH_SLURM_GPU_MODEL": "h100",
        "JOULEBENCH_SLURM_CPUS": "2",
    }
    run = snakemake(
        workdir,
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        # this cluster has no slurmdbd, so no sacct
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    job_ids = SUBMITTED.findall(run.stderr)
    assert len(job_ids) == 1, f"only the new configuration should be submitted: {job_ids}"
    recs = records(workdir)
    assert {k: recs[k]["started_at"] for k in before} == before, "old records were rerun"
    new = recs["bs8_in16_out8"]["provenance"]["slurm"]
    assert new["job_id"] == job_ids[0]
    job = scontrol(job_ids[0])
    assert job["TresPerNode"] == "gres:gpu:h100:1", job  # the --gres spelling
    assert job["Partition"] == "debug" and job["NumCPUs"] == "2"
    summary = pl.read_parquet(workdir / "results" / "tables" / "summary.parquet")
    assert sorted(set(summary["batch_size"])) == [1, 4, 8]
