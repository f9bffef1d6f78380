"""provenance: code hashes, GPU and SLURM facts, and the readable audit of a record."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_record
from fakehw import FakeNvml
from joulebench import provenance


@pytest.fixture
def package(tmp_path: Path) -> Path:
    dst = tmp_path / "joulebench"
    shutil.copytree(
        REPO / "workflow" / "joulebench", dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    return dst


def test_source_hash_follows_only_the_steps_own_sources(package: Path) -> None:
    before = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    engine = package / "engines" / "hf_transformers.py"
    engine.write_text(engine.read_text() + "\n# a change in the engine\n")
    after = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    assert after["bench"] != before["bench"]
    assert {s: after[s] for s in after if s != "bench"} == {
        s: before[s] for s in before if s != "bench"
    }
    (package / "plots.py").write_text("# changed\n")
    assert provenance.source_hash("bench", package) == after["bench"]
    assert provenance.source_hash("plot", package) != after["plot"]


def test_source_hash_errors_name_the_step(package: Path) -> None:
    with pytest.raises(KeyError, match="no code dependencies for step 'nope'; allowed: "):
        provenance.source_hash("nope", package)
    (package / "memory.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"'memory\.py' of step 'bench'"):
        provenance.source_hash("bench", package)


def test_editing_the_energy_package_reruns_benchmarks_and_serving(package: Path) -> None:
    before = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    meter = package / "energy" / "rapl.py"
    meter.write_text(meter.read_text() + "\n# a change in a meter\n")
    after = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    assert {s for s in after if after[s] != before[s]} == {"bench", "serve"}


def test_gpu_info_describes_visible_gpus(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    info = provenance.gpu_info(fake_nvml)
    assert info["driver"] == "999.1"
    assert info["devices"] == [
        {"uuid": "GPU-bbbb-1111", "name": "Fake H100", "power_limit_w": 700.0}
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert "NVML sees 2" in provenance.gpu_info(fake_nvml)["error"]


def test_slurm_info_reads_the_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURMD_NODENAME", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(var, raising=False)
    assert provenance.slurm_info() is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    monkeypatch.setenv("SLURMD_NODENAME", "n7")
    info = provenance.slurm_info()
    assert info is not None
    assert (info["job_id"], info["partition"], info["node"]) == ("42", "gpu", "n7")


def test_provenance_command_prints_a_table_or_json(tmp_path: Path) -> None:
    record = make_record("bf16", 4, [{"pe": 1.0, "pt": 0.1, "fe": 3.0, "ft": 0.5}])
    record["provenance"] |= {
        "slurm": {"job_id": "77", "partition": "gpu", "node": "n1"},
        "gpu": {
            "driver": "550.1",
            "devices": [{"uuid": "GPU-x", "name": "H100", "power_limit_w": 700.0}],
        },
        "code_hash": "abc123",
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "joulebench", "provenance", str(path), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    table = cli()
    assert "[slurm]" in table and "job id" in table and "77" in table
    assert "GPU 0" in table and "H100 GPU-x power limit 700.0 W" in table
    assert "driver" in table and "550.1" in table
    assert re.search(r"^  benchmark code hash +abc123$", table, re.MULTILINE), table
    assert "batch_size" in table
    raw = json.loads(cli("--json"))
    assert raw["provenance"]["slurm"]["job_id"] == "77"
