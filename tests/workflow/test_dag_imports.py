"""Building the DAG stays light: `snakemake -n` on the default study (offline benchmarks and
serving experiments) imports neither torch, transformers, altair, aiohttp nor polars (issue #14).

The list of imported modules comes from Python itself (`-X importtime` prints one line per module
imported, on stderr), so a lazy import that fires while Snakemake parses the rules counts too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, snakemake_argv

#: Packages that only jobs may import; each costs seconds or hundreds of MB at DAG build.
HEAVY = (
    "torch",
    "transformers",
    "altair",
    "aiohttp",
    "polars",
    "vllm",
    "bitsandbytes",
    "accelerate",
)
LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")


def imported_modules(stderr: str) -> set[str]:
    return {m.group(2) for line in stderr.splitlines() if (m := LINE.match(line))}


def test_imported_modules_parses_python_importtime_output():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "json" in imported_modules(out.stderr)
    assert "json.decoder" in imported_modules(out.stderr)


def test_dry_run_of_the_default_study_imports_no_heavy_package(tmp_path: Path):
    argv = snakemake_argv(tmp_path, "-n", "--configfile", str(REPO / "config" / "config.yaml"))
    run = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    jobs = run.stdout
    planned = set(re.findall(r"^(?:local)?rule (\w+):", jobs, re.MULTILINE))
    assert {"benchmark", "serve"} <= planned, f"the default study should plan both: {planned}"
    modules = imported_modules(run.stderr)
    assert "joulebench.study.config" in modules, "the rules did not import the study at all"
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert not heavy, f"building the DAG imported {', '.join(heavy[:12])}"


def test_the_check_sees_a_heavy_import():
    """The check can fail: a lazily imported heavy package shows up in the list."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "def f():\n    import aiohttp\nf()"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "aiohttp" in imported_modules(out.stderr)
