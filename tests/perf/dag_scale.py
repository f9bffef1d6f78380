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
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1"]
    rows, missed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bare").mkdir()
        (root / "bare" / "Snakefile").write_text(BARE)
        for n in args.sizes:
            work = root / f"jb{n}"
            work.mkdir()
            (work / "config.yaml").write_text(yaml.safe_dump(study(n)))
            jb_s, jb_mb, jb_jobs = dry_run(
                [*snakemake, "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml"], work
            )
            bare_s, bare_mb, bare_jobs = dry_run(
                [*snakemake, "--config", f"size={max(jb_jobs - 2, 1)}"], root / "bare"
            )
            ratio = jb_s / bare_s
            missed |= ratio > args.target
            rows.append((n, jb_jobs, jb_s, jb_mb, bare_jobs, bare_s, bare_mb, ratio))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} (1/5 min)")
    head = ("configs", "jobs", "jb s", "jb MiB", "bare jobs", "bare s", "bare MiB", "ratio")
    print("  ".join(f"{h:>9}" for h in head))
    for n, jobs, s, mb, bjobs, bs, bmb, ratio in rows:
        flag = "" if ratio <= args.target else f"  > target {args.target}"
        print(
            f"{n:>9}  {jobs:>9}  {s:>9.2f}  {mb:>9.0f}  {bjobs:>9}  {bs:>9.2f}  {bmb:>9.0f}  "
            f"{ratio:>9.2f}{flag}"
        )
    print(f"target: joulebench within {args.target}x of bare Snakemake at every size: "
          + ("MISSED" if missed else "met"))  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
