"""The ct-* variants through the workflow: one checkpoint per (model, variant), reused by every
benchmark of it. A dry run (default tier); a tiny study run up to one record, then dry runs after
config edits (slow tier)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MODEL
from test_workflow import planned, snakemake, write_config

#: Input features of every Linear divide the default group size (128 hidden, 384 intermediate).
MODEL = {**TINY_MODEL, "overrides": {**TINY_MODEL["overrides"], "intermediate_size": 384}}

STUDY: dict[str, Any] = {
    "study": "quant",
    "device": "cpu",
    "models": [MODEL],
    "precisions": ["bf16", "ct-w4a16"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
    "measurement": {"meter": "estimate", "warmup_runs": 0, "repetitions": 2, "min_window_s": 0.05},
}

RECORD = "results/records/tiny/ct-w4a16/transformers/bs1_in8_out4.json"
CKPT = "results/variants/tiny/ct-w4a16.ckpt"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study with the ct-w4a16 record made (model → checkpoint → benchmark), nothing else."""
    workdir = tmp_path_factory.mktemp("quant-study")
    write_config(workdir, STUDY)
    run = snakemake(workdir, RECORD)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def planned_with(workdir: Path, **changes: Any) -> dict[str, list[str]]:
    """Dry-run jobs of the study with top-level ``changes`` to its config (then restored)."""
    cfg = copy.deepcopy(STUDY) | changes
    write_config(workdir, cfg)
    try:
        return planned(workdir)
    finally:
        write_config(workdir, STUDY)


def test_checkpoint_rule_and_describe_rule_split_by_precision(tmp_path: Path) -> None:
    write_config(tmp_path, STUDY)
    jobs = planned(tmp_path)
    assert jobs["quantize_variant"] == ["results/variants/tiny/ct-w4a16.json"]
    assert jobs["describe_variant"] == ["results/variants/tiny/bf16.json"]
    assert sorted(jobs["benchmark"]) == [RECORD.replace("ct-w4a16", "bf16"), RECORD]


@pytest.mark.slow
def test_record_benchmarks_the_written_checkpoint(study: Path) -> None:
    manifest = json.loads((study / "results/variants/tiny/ct-w4a16.json").read_text())
    assert manifest["checkpoint"] == CKPT
    assert manifest["quantization"]["format"] == "pack-quantized"
    assert (study / CKPT / "config.json").is_file()
    assert not (study / f"{CKPT}.partial").exists()
    assert (study / "results/benchmarks/variants/tiny/ct-w4a16.tsv").is_file()
    assert "joulebench quantize" in (study / "logs/variants/tiny/ct-w4a16.log").read_text()
    record = json.loads((study / RECORD).read_text())
    assert record["status"] == "ok", record.get("reason")
    assert record["variant"]["checkpoint"] == CKPT
    assert record["engine"]["checkpoint"] == CKPT
    assert record["engine"]["quantized_execution"]["status"] == ["decompressed"]


@pytest.mark.slow
def test_every_benchmark_reuses_the_checkpoint(study: Path) -> None:
    jobs = planned_with(study, batch_sizes=[1, 2])
    assert "quantize_variant" not in jobs  # made once, already there
    assert "describe_variant" in jobs  # bf16's, never made by the targeted run
    assert RECORD.replace("bs1", "bs2") in jobs["benchmark"]


@pytest.mark.slow
def test_quantization_settings_remake_the_checkpoint(study: Path) -> None:
    jobs = planned_with(study, quantization={"group_size": 64})
    assert jobs["quantize_variant"] == ["results/variants/tiny/ct-w4a16.json"]
    assert RECORD in jobs["benchmark"]
