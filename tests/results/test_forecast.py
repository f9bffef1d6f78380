"""forecast: parsing a dry run, costing it, and matching planned jobs to measured ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joulebench.results import forecast as fc
from joulebench.results.forecast import ForecastError, PlannedJob

DRY_RUN = """\
Building DAG of jobs...
Job stats:
job              count
-------------  -------
prepare_model        1
benchmark            3
aggregate            1
all                  1
total                6


[Thu Nov 26 13:43:15 2026]
rule prepare_model:
    output: results/models/m
    jobid: 3
    wildcards: model=m
    resources: tmpdir=/tmp, runtime=30, mem_mb=48000, mem=48 GB, mem_mib=45777
Shell command: None

[Thu Nov 26 13:43:29 2026] Group job bench (jobs in lexicogr. order):

    [Thu Nov 26 13:43:29 2026]
    rule benchmark:
        output: results/records/m/bf16/transformers/bs1_in512_out256.json
        wildcards: model=m, precision=bf16, engine=transformers, point=bs1_in512_out256
        threads: 8
        resources: tmpdir=/tmp, gpu=1, runtime=30, mem_mb=48000
Shell command: None

    [Thu Nov 26 13:43:29 2026]
    rule benchmark:
        output: results/records/m/bf16/transformers/bs8_in512_out256.json
        wildcards: model=m, precision=bf16, engine=transformers, point=bs8_in512_out256
        threads: 8
        resources: tmpdir=/tmp, gpu=1, runtime=30, mem_mb=48000
Shell command: None

[Thu Nov 26 13:43:29 2026]
rule benchmark:
    output: results/records/m/fp32/transformers/bs64_in512_out256.json
    wildcards: model=m, precision=fp32, engine=transformers, point=bs64_in512_out256
    threads: 8
    resources: tmpdir=/tmp, gpu=0, gres=gpu:h100:2, runtime=90
Shell command: None

[Thu Nov 26 13:43:29 2026]
rule aggregate:
    output: results/tables/summary.parquet
    resources: tmpdir=/tmp, runtime=10

[Thu Nov 26 13:43:29 2026]
rule all:
    jobid: 0
    resources: tmpdir=/tmp
This was a dry-run (flag -n). The order of jobs does not reflect the order of execution.
"""


def jobs() -> list[PlannedJob]:
    return fc.parse_dry_run(DRY_RUN, local={"aggregate", "all"})


def test_parse_reads_rules_groups_wildcards_threads_and_resources() -> None:
    parsed = jobs()
    assert [j.rule for j in parsed] == [
        "prepare_model",
        "benchmark",
        "benchmark",
        "benchmark",
        "aggregate",
        "all",
    ]
    prep, b1, b2, b3, agg, _ = parsed
    assert prep.group is None and prep.runtime_min == 30 and prep.gpus == 0 and prep.threads == 1
    assert b1.group == b2.group == "bench" and b1.group_instance == b2.group_instance == 1
    assert b3.group is None, "a top-level rule after a group is not in the group"
    assert b1.threads == 8 and b1.gpus == 1
    assert b1.config_id == "m/bf16/transformers/bs1_in512_out256"
    assert b3.gpus == 2, "the gres spelling counts its GPUs"
    assert agg.local and not b1.local


def test_costs_per_rule_submissions_and_energy_bound() -> None:
    result = fc.forecast(jobs(), gpu_power_w=500)
    by_rule = {r.rule: r for r in result.rules}
    assert by_rule["benchmark"].jobs == 3
    assert by_rule["benchmark"].requested_h == pytest.approx(0.5 + 0.5 + 1.5)
    assert by_rule["benchmark"].requested_gpu_h == pytest.approx(0.5 + 0.5 + 1.5 * 2)
    assert by_rule["aggregate"].requested_h == 0, "local rules cost no allocation"
    assert result.submissions == 3  # prepare_model, the bench group, the ungrouped benchmark
    assert result.groups == {"bench": 1}
    assert result.energy_bound_kwh == pytest.approx(4.0 * 0.5)
    text = fc.render(result)
    assert "scheduler submissions: 3 (group bench: 1)" in text
    assert "4.00 GPU-h" in text and "2.00 kWh" in text


def write_history(results: Path, config_id: str, seconds: list[float], power_w: float) -> None:
    tsv = results / "benchmarks" / "benchmark" / f"{config_id}.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s}\t0:00:00\t1\t1\t1\t1\t0\t0\t0\t0\n" for s in seconds)
    tsv.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n" + rows
    )
    record = results / "records" / f"{config_id}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    runs = [
        {"phase": "prefill", "time_s": 0.5, "energy_j": 0.5 * power_w, "window_repeats": 2},
        {"phase": "full", "time_s": 2.0, "energy_j": 2.0 * power_w, "window_repeats": 1},
        {"phase": "decode", "time_s": 1.0, "energy_j": 999.0, "window_repeats": 0},
    ]
    record.write_text(json.dumps({"runs": runs, "meter": {"source": "nvml"}}))


def test_history_matches_exact_then_nearest_then_falls_back(tmp_path: Path) -> None:
    write_history(tmp_path, "m/bf16/transformers/bs1_in512_out256", [360.0, 180.0], 300.0)
    write_history(tmp_path, "m/bf16/transformers/bs16_in512_out256", [720.0], 600.0)
    write_history(tmp_path, "m/bf16/transformers/bs2_in512_out256", [36.0], 100.0)
    history = fc.load_history(tmp_path)
    assert history["m/bf16/transformers/bs1_in512_out256"].seconds == 270.0
    assert history["m/bf16/transformers/bs1_in512_out256"].avg_power_w == pytest.approx(300.0)
    # bs8 is nearest to bs16 (log2 distance 1) not bs2 (2)
    match, how = fc.most_similar("m/bf16/transformers/bs8_in512_out256", history)
    assert how == "similar" and match.config_id == "m/bf16/transformers/bs16_in512_out256"
    assert fc.most_similar("m/fp32/transformers/bs8_in512_out256", history) is None

    result = fc.forecast(jobs(), history)
    assert dict(result.matched) == {"exact": 1, "similar": 1, "requested": 1}
    # exact: 270 s on 1 GPU; similar: 720 s on 1 GPU; no history: 90 min on 2 GPUs
    assert result.measured_gpu_h == pytest.approx(270 / 3600 + 720 / 3600 + 1.5 * 2)
    assert result.measured_energy_kwh == pytest.approx((300 * 270 + 600 * 720) / 3.6e6)
    assert result.measured_meters == ["nvml"]


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="not the output of `snakemake --dry-run`"):
        fc.parse_dry_run("Building DAG of jobs...\nrule x:\n")
    assert (
        fc.parse_dry_run("Building DAG of jobs...\nNothing to be done (all requested files exist).")
        == []
    )
    with pytest.raises(ForecastError, match="gpu_power_w must be positive"):
        fc.forecast([], gpu_power_w=0)
    bad = tmp_path / "benchmarks" / "benchmark" / "m" / "p" / "e" / "bs1_in1_out1.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("s\th:m:s\n")
    with pytest.raises(ForecastError, match="no wall-clock seconds"):
        fc.load_history(tmp_path)


def test_local_rules_come_from_the_rule_files() -> None:
    assert fc.local_rules() == {
        "all",
        "download_model",
        "describe_variant",
        "aggregate",
        "plot_energy_per_token_vs_batch",
        "plot_phase_energy_per_request",
        "plot_time_energy_pareto",
        "plot_power",
        "findings",
        "aggregate_serving",
        "provenance_audit",
        "plot_serving_energy_latency",
        "plot_serving_power",
    }


def test_a_tensor_parallel_job_matches_one_on_as_many_gpus(tmp_path: Path) -> None:
    """The point's `_tp` is read: a two-GPU job is costed from a two-GPU measurement even when a
    one-GPU one is nearer in shape (and listed first)."""
    write_history(tmp_path, "m/bf16/vllm/bs16_in512_out256", [100.0], 150.0)
    write_history(tmp_path, "m/bf16/vllm/bs64_in512_out256_tp2", [400.0], 500.0)
    history = fc.load_history(tmp_path)
    assert list(history) == ["m/bf16/vllm/bs16_in512_out256", "m/bf16/vllm/bs64_in512_out256_tp2"]

    match, how = fc.most_similar("m/bf16/vllm/bs8_in512_out256_tp2", history)
    assert (match.config_id, how) == ("m/bf16/vllm/bs64_in512_out256_tp2", "similar")
    match, _ = fc.most_similar("m/bf16/vllm/bs8_in512_out256", history)
    assert match.config_id == "m/bf16/vllm/bs16_in512_out256"
    match, _ = fc.most_similar("m/bf16/vllm/bs8_in512_out256_tp4", history)
    assert match.config_id == "m/bf16/vllm/bs64_in512_out256_tp2", "tp2 is nearer to tp4 than tp1"

    job = PlannedJob(
        "benchmark",
        local=False,
        wildcards={
            "model": "m",
            "precision": "bf16",
            "engine": "vllm",
            "point": "bs8_in512_out256_tp2",
        },
        resources={"runtime": "60", "gpu": "2"},
    )
    result = fc.forecast([job], history)
    assert dict(result.matched) == {"similar": 1}
    assert result.measured_gpu_h == pytest.approx(400 / 3600 * 2)
    assert result.measured_energy_kwh == pytest.approx(500 * 400 / 3.6e6)


def test_a_history_file_that_names_no_point_is_an_error(tmp_path: Path) -> None:
    write_history(tmp_path, "m/bf16/vllm/bs8_in512_out256_tp1", [1.0], 1.0)
    with pytest.raises(ForecastError, match=r"bs8_in512_out256_tp1\.tsv: not a benchmark job"):
        fc.load_history(tmp_path)
