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
from joulebench.results.figures import FIGURES
from test_config import BAD_VALUES, with_change

pytestmark = pytest.mark.slow

#: The study-wide figure rules (one per figure, each with its own report caption): one job each.
PLOTS = {f"plot_{figure}": 1 for figure in FIGURES}

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


def planned(workdir: Path, env: dict[str, str] | None = None, *args: str) -> dict[str, list[str]]:
    """Dry run: the outputs each rule would (re)make; {} only where Snakemake says "Nothing to
    be done". The jobs read off the listing must agree with Snakemake's own "Job stats" table,
    so a change in the listing's format fails here instead of reading as no jobs."""
    run = snakemake(workdir, "--dry-run", *args, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    blocks: dict[str, int] = {}
    rule = None
    for line in run.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
            jobs.setdefault(rule, [])
            blocks[rule] = blocks.get(rule, 0) + 1
        elif (m := re.match(r"^\s+output: (.+)$", line)) and rule:
            jobs[rule].append(m.group(1).split(",")[0])
    stats = job_stats(run.stdout)
    assert blocks == stats, run.stdout[-3000:]
    if not stats:
        assert "Nothing to be done" in run.stdout + run.stderr, run.stdout[-3000:]
    return jobs


def job_stats(dry_run: str) -> dict[str, int]:
    """Snakemake's "Job stats:" table of a dry run: jobs per rule ({} where there is none)."""
    if "Job stats:" not in dry_run:
        return {}
    table = dry_run.split("Job stats:", 1)[1].strip().splitlines()
    counts: dict[str, int] = {}
    for line in table[2:]:  # past the header and its dashes
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    assert counts, dry_run[-3000:]
    return counts


def rules(jobs: dict[str, list[str]]) -> dict[str, int]:
    """How many jobs of each rule a dry run plans (``all`` has no output, so counts as 1)."""
    return {rule: max(1, len(outputs)) for rule, outputs in jobs.items()}


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
    # the findings report opens with the provenance audit of these very records
    audit = json.loads((results / "tables" / "provenance.json").read_text())
    assert len(audit["records"]) == 4
    assert "records made by different code" not in audit["verdict"]
    first = (results / "report" / "findings.md").read_text().splitlines()[2]
    assert first == f"**{audit['verdict']}**"


def test_numbers_are_sane(study: Path) -> None:
    summary = pl.read_parquet(study / "results" / "tables" / "summary.parquet")
    assert summary.height == 4 * 3
    assert set(summary["meter_source"]) == {"estimate"}
    # each mean is the mean of the records' own runs, computed here from the JSON
    for record in (study / "results" / "records").rglob("*.json"):
        rec = json.loads(record.read_text())
        for phase in ("prefill", "full", "decode"):
            runs = [r for r in rec["runs"] if r["phase"] == phase]
            row = summary.filter(config_id=rec["config_id"], phase=phase)
            expected = sum(r["energy_j"] for r in runs) / len(runs)
            assert row["energy_j_mean"].item() == pytest.approx(expected, rel=1e-9)
            expected = sum(r["tokens"] / r["time_s"] for r in runs) / len(runs)
            assert row["tokens_per_s_mean"].item() == pytest.approx(expected, rel=1e-9)
    decode = summary.filter(phase="decode").sort("batch_size")
    for precision in ("fp32", "bf16"):
        j = decode.filter(precision=precision)["j_per_token_mean"].to_list()
        assert j[-1] < j[0], f"{precision}: decode J/token did not fall with batching: {j}"
    assert set(summary["host"]) and summary["git_commit"].dtype == pl.String
    # idle baseline, direct phases and the conservation check reach the summary
    # the baseline was idle: the estimate's idle_w (10 W) plus at most a tenth of its dynamic
    # range (35 W), the sampler's own reads; model loading or a generation inside it breaks this
    assert summary["idle_power_w_mean"].is_between(10.0, 13.5).all()
    # net = gross − idle power × duration, per run, so also for the means
    net = summary["energy_j_mean"] - summary["idle_power_w_mean"] * summary["time_s_mean"]
    assert summary["net_energy_j_mean"].to_list() == pytest.approx(net.to_list(), rel=1e-6)
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
    assert set(jobs) == {
        "benchmark",
        "aggregate",
        "provenance_audit",
        *PLOTS,
        "plot_power",
        "findings",
        "all",
    }


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


def edited_package(
    tmp_path: Path, relpath: str, edit: str = "\n_EDITED_BY_A_TEST = 1\n"
) -> dict[str, str]:
    """A copy of the package with ``edit`` (a line of code) appended to ``relpath``, as the
    environment that imports it."""
    shutil.copytree(
        REPO / "workflow" / "joulebench",
        tmp_path / "joulebench",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(REPO / "workflow" / "schemas", tmp_path / "schemas")
    edited = tmp_path / "joulebench" / relpath
    edited.write_text(edited.read_text() + edit)
    return {"PYTHONPATH": str(tmp_path)}


def test_an_engine_code_change_reruns_every_benchmark_only(study: Path, tmp_path: Path) -> None:
    jobs = planned(study, env=edited_package(tmp_path, "harness/engines/hf_transformers.py"))
    assert len(jobs["benchmark"]) == 4 == len(jobs["plot_power"])  # new traces, new charts
    assert set(jobs) == {
        "benchmark",
        "aggregate",
        "provenance_audit",
        *PLOTS,
        "plot_power",
        "findings",
        "all",
    }


def test_a_plotting_code_change_reruns_only_plots_and_findings(study: Path, tmp_path: Path) -> None:
    jobs = planned(study, env=edited_package(tmp_path, "results/plots.py"))
    assert set(jobs) == {*PLOTS, "plot_power", "findings", "all"}
    assert all(len(jobs[rule]) == 1 for rule in PLOTS) and len(jobs["plot_power"]) == 4


#: What reruns downstream of the benchmarks of the e2e study (README "Reruns"), and in
#: addition where the set of records changes: the provenance audit, which reads every record.
DOWNSTREAM = {"aggregate": 1, **PLOTS, "findings": 1, "all": 1}
RECORDS = {"provenance_audit": 1}
EVERY_BENCHMARK = {"benchmark": 4, "plot_power": 4} | RECORDS | DOWNSTREAM


def planned_with(study: Path, **changes: Any) -> dict[str, int]:
    """Jobs per rule of a dry run with top-level ``changes`` to the study's config."""
    write_config(study, copy.deepcopy(STUDY) | changes)
    try:
        return rules(planned(study))
    finally:
        write_config(study, STUDY)


#: README's rerun table, row by row: a config edit and the exact jobs per rule it reruns.
CONFIG_EDITS: list[tuple[str, dict[str, Any], dict[str, int]]] = [
    (
        "a batch size added",
        {"batch_sizes": [1, 8, 2]},
        {"benchmark": 2, "plot_power": 2} | RECORDS,
    ),
    ("an output length changed", {"output_lengths": [6]}, EVERY_BENCHMARK),
    ("a configuration removed", {"batch_sizes": [1]}, RECORDS | DOWNSTREAM),
    (
        "a precision added",
        {"precisions": ["fp32", "bf16", "cpu-int8"]},
        {"describe_variant": 1, "benchmark": 2, "plot_power": 2} | RECORDS | DOWNSTREAM,
    ),
    (
        "a quantization setting",
        {"quantization": {"group_size": 64}},
        {"describe_variant": 2} | EVERY_BENCHMARK,
    ),
    (
        "a measurement setting",
        {"measurement": {**STUDY["measurement"], "repetitions": 3}},
        EVERY_BENCHMARK,
    ),
    (
        "a model entry",
        {"models": [{**TINY_MODEL, "seed": 1}]},
        {"prepare_model": 1, "describe_variant": 2} | EVERY_BENCHMARK,
    ),
    ("an analysis setting", {"analysis": {"confidence": 0.9}}, DOWNSTREAM),
]


@pytest.mark.parametrize(
    ("edit", "changes", "reruns"), CONFIG_EDITS, ids=[e[0] for e in CONFIG_EDITS]
)
def test_a_config_edit_reruns_exactly_its_jobs(
    study: Path, edit: str, changes: dict[str, Any], reruns: dict[str, int]
) -> None:
    expected = reruns if not reruns or "all" in reruns else reruns | DOWNSTREAM
    assert planned_with(study, **changes) == expected


#: Model preparation reruns, hence every job after it.
EVERYTHING = {"prepare_model": 1, "describe_variant": 2} | EVERY_BENCHMARK

#: README's rerun table for code: a package file edited and the exact jobs per rule it reruns.
#: Which steps import which module is `joulebench.provenance.codehash`'s to find (tested in
#: test_provenance); here the rules take its hashes and rerun exactly those steps' jobs.
CODE_EDITS: list[tuple[str, dict[str, int]]] = [
    ("harness/bench.py", EVERY_BENCHMARK),
    ("harness/engines/hf_transformers.py", EVERY_BENCHMARK),
    ("harness/engines/base.py", EVERY_BENCHMARK),  # the CLI reads engine names only for help
    ("harness/memory.py", EVERY_BENCHMARK),
    ("energy/meters.py", EVERY_BENCHMARK),
    ("energy/rapl.py", EVERY_BENCHMARK),
    ("energy/choice.py", EVERY_BENCHMARK),
    ("provenance/record.py", {"describe_variant": 2} | EVERY_BENCHMARK),
    ("study/config.py", EVERYTHING),
    ("models/sources.py", EVERYTHING),
    ("models/precisions.py", EVERYTHING),
    ("models/variants.py", {"describe_variant": 2} | EVERY_BENCHMARK),
    ("core/hostcpu.py", EVERYTHING),
    ("cli/__init__.py", EVERYTHING),
    ("models/quantize.py", {}),  # no ct-* variant in this study (test_quantize_workflow has one)
    ("results/analysis.py", {"plot_power": 4} | DOWNSTREAM),  # the power charts read records
    ("results/derived.py", {"plot_power": 4} | DOWNSTREAM),
    ("results/stats.py", {"plot_power": 4} | DOWNSTREAM),
    ("results/plots.py", PLOTS | {"plot_power": 4, "findings": 1, "all": 1}),
    ("results/findings.py", {"findings": 1, "all": 1}),
    ("results/audit.py", {"provenance_audit": 1, "findings": 1, "all": 1}),
    ("results/compare.py", {}),  # no step imports it
    ("workload/arrivals.py", {}),  # serving only; this study serves nothing
    ("serving/session.py", {}),
]


@pytest.mark.parametrize(("relpath", "reruns"), CODE_EDITS, ids=[e[0] for e in CODE_EDITS])
def test_a_code_edit_reruns_exactly_its_jobs(
    study: Path, tmp_path: Path, relpath: str, reruns: dict[str, int]
) -> None:
    assert rules(planned(study, env=edited_package(tmp_path, relpath))) == reruns


def test_a_comment_or_docstring_edit_reruns_nothing(study: Path, tmp_path: Path) -> None:
    env = edited_package(tmp_path, "harness/bench.py", "\n# an edit\n")
    edited = tmp_path / "joulebench" / "harness" / "bench.py"
    text = edited.read_text()
    assert text.startswith('"""')
    edited.write_text('"""An edited docstring. ' + text[3:])
    assert planned(study, env=env) == {}


def test_a_run_block_edit_reruns_that_rules_jobs(study: Path, tmp_path: Path) -> None:
    """Snakemake's code trigger: the edited rule's jobs and what reads their outputs."""
    copy_of = tmp_path / "repo"
    shutil.copytree(
        REPO / "workflow", copy_of / "workflow", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "profiles", copy_of / "profiles")
    shutil.copy(REPO / "Snakefile", copy_of / "Snakefile")
    rule_file = copy_of / "workflow" / "rules" / "aggregate.smk"
    text = rule_file.read_text()
    anchor = "    run:\n"
    assert text.count(anchor) >= 1
    rule_file.write_text(text.replace(anchor, anchor + "        _edited = True\n", 1))
    run = subprocess.run(
        [*snakemake_argv(study, "--cores", "2", "--dry-run"), "-s", str(copy_of / "Snakefile")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "workflow")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    first_rule = re.search(r"^(?:local)?rule (\w+):", text, re.MULTILINE).group(1)
    assert job_stats(run.stdout) == {first_rule: 1} | DOWNSTREAM


def test_a_profile_change_reruns_nothing(study: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    shutil.copytree(REPO / "profiles" / "default", profile)
    with (profile / "config.yaml").open("a") as handle:
        handle.write("set-resources:\n  benchmark:\n    runtime: 600\n    mem_mb: 12345\n")
    assert planned(study, None, "--workflow-profile", str(profile)) == {}
    # the control: the profile was read (forced, its benchmark jobs carry its resources)
    forced = snakemake(study, "--dry-run", "--forceall", "--workflow-profile", str(profile))
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "mem_mb=12345" in forced.stdout


def test_report_is_self_contained_with_figures_and_table(study: Path) -> None:
    run = snakemake(study, "--report", "report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (study / "report.html").read_text()
    assert "summary.csv" in html and "energy_per_token_vs_batch" in html
    assert "e2e" in html, "the study name from workflow.rst"
    for words in (  # each figure's own caption (workflow/report/figures/)
        "Energy per token against batch size",
        "Energy per request split into its two phases",
        "filled, opaque points lie on the Pareto frontier",
        "one line per traced device",
    ):
        assert words in html, words
    assert 'src="http' not in html, "a self-contained report loads nothing from the web"


def test_a_study_given_with_configfile_replaces_the_default(tmp_path: Path) -> None:
    """`--configfile config/gpu.yaml` beside the default config/config.yaml: the GPU study
    alone, not merged into the default (whose serving section it would inherit)."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    default = rules(planned(tmp_path))
    assert default["serve"] == 1  # the default study serves: one session (bf16, one server)
    gpu = rules(planned(tmp_path, None, "--configfile", str(REPO / "config" / "gpu.yaml")))
    assert "serve" not in gpu and gpu["benchmark"] == 18


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
    # 18 local power charts (one per benchmark) and the provenance audit add jobs, not scheduler
    # submissions
    assert re.search(r"^plot_power\s+18\s+local\s", out, re.MULTILINE), out
    assert "jobs: 51; scheduler submissions: 4 (group bench: 2)" in out


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
