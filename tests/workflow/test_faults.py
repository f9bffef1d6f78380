"""Faults: jobs killed mid-run or mid-write leave nothing partial; secrets never leak."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import bench_fp32_cpu
from joulebench.provenance import record as provenance


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def test_sigterm_in_the_middle_of_writing_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "summary.parquet"
    script = textwrap.dedent(f"""
        import time
        from joulebench.core.atomic import atomic_path
        from joulebench.cli import exit_on_signals
        exit_on_signals()
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                while True:  # a long write, killed half way
                    f.write(b"x" * 65536)
                    f.flush()
                    time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    _wait_for(lambda: any(p.stat().st_size > 100_000 for p in tmp_path.iterdir()))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # no target, no temp file


def test_benchmark_killed_mid_measurement_writes_no_record(
    tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rec.json"
    log = tmp_path / "bench.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "joulebench",
                *bench_fp32_cpu(tiny_model),
                "--repetitions",
                "50",
                "--min-window-s",
                "1",
                "--out",
                str(out),
                "--quiet",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    _wait_for(lambda: "measuring" in log.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert "received SIGTERM" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.log"]


def test_tokens_never_reach_records_or_logs(tiny_model: Path, tmp_path: Path) -> None:
    secret = "hf_joulebenchTESTsecret0123456789"
    env = {**os.environ, "HF_TOKEN": secret, "HUGGING_FACE_HUB_TOKEN": secret}
    out = tmp_path / "rec.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "joulebench",
            "-v",
            *bench_fp32_cpu(tiny_model),
            "--repetitions",
            "2",
            "--warmup",
            "0",
            "--min-window-s",
            "0",
            "--batch-size",
            "1",
            "--input-len",
            "4",
            "--output-len",
            "2",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert secret not in run.stdout + run.stderr
    assert secret not in out.read_text()
    assert secret not in json.dumps(provenance.collect())


@pytest.mark.parametrize("name", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"])
def test_provenance_records_no_environment_secrets(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "s3cr3t-value-xyz")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    prov = json.dumps(provenance.collect())
    assert "s3cr3t-value-xyz" not in prov
    # the control, not the property: collect() read this test's environment (set after import),
    # so the secret's absence above is not the result of reading a stale or empty one
    assert '"job_id": "4242"' in prov
