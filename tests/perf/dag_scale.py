"""Building the DAG at scale: `snakemake -n` on generated studies of N configurations, against a
bare two-rule Snakemake workflow with the same number of jobs (Snakemake's own cost, the floor).

Prints one table (seconds and peak memory per size, both workflows, their ratio) and exits
non-zero when joulebench's DAG takes more than --target times the bare workflow's at any size.

    .venv/bin/python tests/perf/dag_scale.py [--sizes 100 1000 5000] [--target 1.3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]

#: N + 2 jobs: N independent ones, one that gathers them (as benchmark → aggregate) and `all`.
BARE = """
N = int(config["size"])

rule all:
    input: "gathered.txt"

rule gather:
    input: expand("out/{i}.txt", i=range(N))
    output: "gathered.txt"
    shell: "cat {input} > {output}"

rule one:
    output: "out/{i}.txt"
    shell: "echo {wildcards.i} > {output}"
"""


#: The same jobs in joulebench's shape: per configuration a benchmark job (two inputs from
#: shared upstream jobs, two outputs, a log, a benchmark file, a params and a resources function)
#: and a chart job (two inputs, a report-flagged output, a log); gathered as the tables are.
#: Snakemake's cost per file, not per job, is its floor for joulebench's DAG.
SHAPED = """
N = int(config["size"])
POINTS = [f"c{i}" for i in range(N)]

rule all:
    input: "gathered.txt", expand("plots/{p}.html", p=POINTS)

rule gather:
    input: expand("records/{p}.json", p=POINTS)
    output: "gathered.txt"
    shell: "cat {input} > {output}"

rule model:
    output: directory("models/m")
    shell: "mkdir -p {output}"

rule variant:
    input: "models/m"
    output: "variants/v.json"
    shell: "echo v > {output}"

rule bench:
    input: model="models/m", variant="variants/v.json"
    output: record="records/{p}.json", trace="records/{p}.trace.parquet"
    log: "logs/bench/{p}.log"
    benchmark: "benchmarks/bench/{p}.tsv"
    resources: mem_mb=lambda wildcards: 3000
    params: spec=lambda wildcards: wildcards.p
    shell: "echo {params.spec} > {output.record}; touch {output.trace}"

rule plot:
    input: record="records/{p}.json", trace="records/{p}.trace.parquet"
    output: report("plots/{p}.html", caption="caption.rst", category="c", labels={"p": "{p}"})
    log: "logs/plot/{p}.log"
    shell: "cp {input.record} {output}"
"""


def study(n: int) -> dict:
    """A CPU study of ``n`` benchmark configurations (no serving): 2 precisions × batch sizes."""
    batches = list(range(1, n // 2 + 1))
    return {
        "study": f"scale-{n}",
        "device": "cpu",
        "engines": ["transformers"],
        "models": [{"name": "tiny", "source": "synthetic", "architecture": "tiny-llama"}],
        "precisions": ["fp32", "bf16"],
        "batch_sizes": batches,
        "input_lengths": [8],
        "output_lengths": [4],
        "analysis": {"baseline": {"precision": "fp32", "batch_size": 1}},
    }


def fastest(argv: list[str], cwd: Path, repeat: int) -> tuple[float, float, int]:
    """The fastest of ``repeat`` dry runs (a shared 2-core machine is noisy), its peak memory
    the largest seen, and the job count."""
    runs = [dry_run(argv, cwd) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]


def dry_run(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS (MiB, the process and its children, sampled) and the job count."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    handle, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = handle.memory_info().rss + sum(
                c.memory_info().rss for c in handle.children(recursive=True)
            )
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        sys.exit(f"dry run failed ({' '.join(argv[:4])} ...):\n{out[-3000:]}")
    total = re.search(r"^total\s+(\d+)", out, re.MULTILINE)
    return seconds, peak / 2**20, int(total.group(1)) if total else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--target", type=float, default=1.3, help="max joulebench / bare time")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per workflow and size; the fastest counts"
    )
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1"]
    rows, missed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bare").mkdir()
        (root / "bare" / "Snakefile").write_text(BARE)
        (root / "shaped").mkdir()
        (root / "shaped" / "Snakefile").write_text(SHAPED)
        (root / "shaped" / "caption.rst").write_text("A chart.\n")
        for n in args.sizes:
            work = root / f"jb{n}"
            work.mkdir()
            (work / "config.yaml").write_text(yaml.safe_dump(study(n)))
            jb_s, jb_mb, jb_jobs = fastest(
                [*snakemake, "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml"],
                work,
                args.repeat,
            )
            bare_s, bare_mb, bare_jobs = fastest(
                [*snakemake, "--config", f"size={max(jb_jobs - 2, 1)}"], root / "bare", args.repeat
            )
            shaped_s, _, shaped_jobs = fastest(
                [*snakemake, "--config", f"size={n}"], root / "shaped", args.repeat
            )
            ratio = jb_s / bare_s
            missed |= ratio > args.target
            rows.append(
                (n, jb_jobs, jb_s, jb_mb, bare_jobs, bare_s, bare_mb, ratio, shaped_jobs, shaped_s)
            )
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} (1/5 min)")
    head = ("configs", "jobs", "jb s", "jb MiB", "bare jobs", "bare s", "bare MiB", "ratio")
    head += ("shaped jobs", "shaped s", "jb/shaped")
    print("  ".join(f"{h:>9}" for h in head))
    for n, jobs, s, mb, bjobs, bs, bmb, ratio, sjobs, ss in rows:
        flag = "" if ratio <= args.target else f"  > target {args.target}"
        print(
            f"{n:>9}  {jobs:>9}  {s:>9.2f}  {mb:>9.0f}  {bjobs:>9}  {bs:>9.2f}  {bmb:>9.0f}  "
            f"{ratio:>9.2f}  {sjobs:>11}  {ss:>9.2f}  {s / ss:>9.2f}{flag}"
        )
    print(
        "shaped: the same jobs with joulebench's files per job (inputs, outputs, log, benchmark,"
        " report flag); jb/shaped is what joulebench's own code adds"
    )
    print(f"target: joulebench within {args.target}x of bare Snakemake at every size: "
          + ("MISSED" if missed else "met"))  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
