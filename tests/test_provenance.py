"""provenance: code hashes, GPU and SLURM facts, and the readable audit of a record."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, make_record
from fakehw import FakeNvml
from joulebench.provenance import record as provenance
from joulebench.results import audit


@pytest.fixture
def package(tmp_path: Path) -> Path:
    dst = tmp_path / "joulebench"
    shutil.copytree(
        REPO / "workflow" / "joulebench", dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    return dst


def test_source_hash_follows_only_the_steps_own_sources(package: Path) -> None:
    before = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    engine = package / "harness" / "engines" / "hf_transformers.py"
    engine.write_text(engine.read_text() + "\n# a change in the engine\n")
    after = {s: provenance.source_hash(s, package) for s in provenance.CODE_DEPENDENCIES}
    assert after["bench"] != before["bench"]
    assert {s: after[s] for s in after if s != "bench"} == {
        s: before[s] for s in before if s != "bench"
    }
    (package / "results" / "plots.py").write_text("# changed\n")
    assert provenance.source_hash("bench", package) == after["bench"]
    assert provenance.source_hash("plot", package) != after["plot"]


def test_source_hash_errors_name_the_step(package: Path) -> None:
    with pytest.raises(KeyError, match="no code dependencies for step 'nope'; allowed: "):
        provenance.source_hash("nope", package)
    (package / "harness" / "memory.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"'harness/memory\.py' of step 'bench'"):
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
    """The variables are the ones SLURM sets in a job (sbatch(1), "OUTPUT ENVIRONMENT
    VARIABLES"), spelled here independently of the product's table."""
    for var in [v for v in os.environ if v.startswith(("SLURM_", "SLURMD_"))]:
        monkeypatch.delenv(var)  # also when the suite itself runs inside a SLURM job
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


def study_record(batch: int, **changes: Any) -> dict[str, Any]:
    """A record of a clean, measured GPU study; ``changes`` replace provenance/meter parts."""
    record = make_record("bf16", batch, [{"pe": 1.0, "pt": 0.1, "fe": 3.0, "ft": 0.5}], "nvml")
    record["provenance"] |= {
        "code_hash": "c0de",
        "git": {"commit": "abc", "dirty": False},
        "packages": {"torch": "2.13.0", "transformers": "5.1.0"},
        "gpu": {
            "driver": "550.1",
            "devices": [{"uuid": f"GPU-{batch}", "name": "H100", "power_limit_w": 700.0}],
        },
    }
    for key, value in changes.items():
        if key == "meter":
            record["meter"] = {"source": value}
        else:
            record["provenance"][key] = value
    return record


H100 = {"driver": "550.1", "devices": [{"uuid": "GPU-9", "name": "H100", "power_limit_w": 700.0}]}


@pytest.mark.parametrize(
    ("change", "kinds", "detail"),
    [
        ({"packages": {"torch": "2.12.0", "transformers": "5.1.0"}}, {"mixed-libraries"}, "torch"),
        ({"gpu": H100 | {"driver": "560.3"}}, {"mixed-drivers"}, "560.3 (1)"),
        (
            {"gpu": {"driver": "550.1", "devices": [{"name": "A100", "power_limit_w": 700.0}]}},
            {"mixed-gpus"},
            "A100 (1), H100 (2)",
        ),
        (
            {"gpu": {"driver": "550.1", "devices": [{"name": "H100", "power_limit_w": 500.0}]}},
            {"mixed-power-limits"},
            "500.0 (1), 700.0 (2)",
        ),
        ({"code_hash": "beef"}, {"code-hash", "mixed-code-hashes"}, "1 of 3 records"),
        ({"git": {"commit": "abc", "dirty": True}}, {"dirty"}, "1 of 3 records (commit abc)"),
        ({"meter": "estimate"}, {"mixed-energy"}, "estimate (1), nvml (2)"),
    ],
)
def test_audit_flags_what_makes_rows_incomparable(
    change: dict[str, Any], kinds: set[str], detail: str
) -> None:
    clean = [(f"r{b}.json", study_record(b)) for b in (1, 2)]
    assert audit.audit(clean, "c0de").flags == []
    result = audit.audit([*clean, ("odd.json", study_record(4, **change))], "c0de")
    assert {f.kind for f in result.flags} == kinds
    assert any(detail in f.text() for f in result.flags), [f.text() for f in result.flags]
    assert result.verdict.startswith("Provenance audit: NOT comparable — 3 records")


def test_audit_of_a_clean_study_and_its_rows() -> None:
    result = audit.audit([(f"r{b}.json", study_record(b)) for b in (1, 2)], "c0de")
    assert result.verdict == (
        "Provenance audit: comparable — 2 records, 1 host, energy: nvml; nothing flagged."
    )
    first = result.rows.row(0, named=True)
    assert (first["gpu"], first["driver"], first["power_limit_w"]) == ("H100", "550.1", "700.0")
    assert (first["code_hash"], first["dirty"], first["pkg:torch"]) == ("c0de", False, "2.13.0")
    # every record on an estimate is comparable too: an estimate is only flagged when mixed
    est = [(f"r{b}.json", study_record(b, meter="estimate")) for b in (1, 2)]
    assert audit.audit(est, "c0de").flags == []


def test_provenance_command_audits_a_directory(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "records").mkdir(parents=True)
    (results / "variants").mkdir()
    (results / "variants" / "bf16.json").write_text('{"precision": "bf16"}')  # not a record
    for b, code in ((1, "c0de"), (2, "c0de"), (4, "beef")):
        path = results / "records" / f"bs{b}.json"
        path.write_text(json.dumps(study_record(b, code_hash=code)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "joulebench", "provenance", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    run = cli(str(results), "--code-hash", "c0de")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["config_id", "code_hash", "git_commit"]
    assert len([ln for ln in lines if ln.startswith("m/bf16/")]) == 3
    assert "FLAG records made by different code: beef (1), c0de (2)" in run.stdout
    assert lines[-1].startswith("Provenance audit: NOT comparable — 3 records")
    strict = cli(
        str(results), "--code-hash", "c0de", "--strict", "--out-json", str(tmp_path / "a.json")
    )
    assert strict.returncode == 1
    saved = json.loads((tmp_path / "a.json").read_text())
    assert {f["text"].split(":")[0] for f in saved["flags"]} == {
        "code hash differs from the checkout's",
        "records made by different code",
    }
    clean = [str(results / "records" / f"bs{b}.json") for b in (1, 2)]
    assert cli(*clean, "--code-hash", "c0de", "--strict").returncode == 0
    missing = cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().endswith(f"{tmp_path / 'nope'}: no such file or directory")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_audit_of_records_that_lack_most_provenance() -> None:
    # records made before code hashes and GPU facts were kept: audited, not a traceback
    bare = [
        (f"r{b}.json", make_record("fp32", b, [{"pe": 1, "pt": 1, "fe": 2, "ft": 2}]))
        for b in (1, 2)
    ]
    result = audit.audit(bare, "c0de")
    assert [f.kind for f in result.flags] == ["code-hash"]
    assert "2 of 2 records differ from c0de (none)" in result.flags[0].text()
