"""The suite's speed does not depend on the host's SLURM: its snakemake asks SLURM nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PATH_BEFORE, REPO, SLURM_TOOLS, path_without_slurm

#: A stand-in for slurm-client's commands: each call leaves a mark (a real one may wait 10 s).
FAKE_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
exit 1
"""


def fake_slurm_client(folder: Path, calls: Path) -> Path:
    folder.mkdir()
    for tool in ("sinfo", "scontrol", "sacct", "squeue"):
        script = folder / tool
        script.write_text(FAKE_TOOL.format(calls=calls))
        script.chmod(0o755)
    (folder / "not-slurm").write_text("#!/bin/sh\necho here\n")
    (folder / "not-slurm").chmod(0o755)
    return folder


def start_snakemake(path: str) -> None:
    """Start snakemake (it loads every executor plugin) with ``path`` as PATH."""
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--version"],
        env={**os.environ, "PATH": path},
        check=True,
        capture_output=True,
    )


def test_slurm_tools_are_out_of_reach_and_everything_else_is_not(tmp_path: Path) -> None:
    client = fake_slurm_client(tmp_path / "bin", tmp_path / "calls")
    path = path_without_slurm(f"{client}{os.pathsep}/usr/bin", tmp_path / "shadow")
    for tool in SLURM_TOOLS:
        assert shutil.which(tool, path=path) is None
    found = shutil.which("not-slurm", path=path)
    assert found is not None
    assert subprocess.run([found], capture_output=True, text=True).stdout == "here\n"
    assert shutil.which("sh", path=path) is not None


def test_snakemake_asks_slurm_nothing_under_the_suite(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    client = fake_slurm_client(tmp_path / "bin", calls)
    # the control: with slurm-client on PATH the SLURM plugin calls it while snakemake starts
    start_snakemake(f"{client}{os.pathsep}{os.environ['PATH']}")
    assert "scontrol show config" in calls.read_text()
    calls.unlink()
    # what the suite does: the same PATH with SLURM's commands out of reach
    start_snakemake(path_without_slurm(f"{client}{os.pathsep}{os.environ['PATH']}", tmp_path / "s"))
    assert not calls.exists()


def test_the_suite_runs_with_slurm_out_of_reach() -> None:
    """conftest's session fixture is on: no SLURM command is found from inside a test.

    Where slurm-client is installed (CI installs it for its SLURM tier) the commands were on
    the suite's PATH and are hidden now; elsewhere PATH is left as it was. The branch is named
    in the assertion's message either way.
    """
    had = sorted(t for t in SLURM_TOOLS if shutil.which(t, path=PATH_BEFORE))
    now = sorted(t for t in SLURM_TOOLS if shutil.which(t))
    assert now == [], f"slurm-client on the suite's PATH ({had}): still found {now}"
    if not had:
        assert os.environ["PATH"] == PATH_BEFORE, "no slurm-client here: PATH must be untouched"
    assert shutil.which("git") is not None
