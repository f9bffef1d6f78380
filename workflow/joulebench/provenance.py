"""Provenance: where a number came from (software, hardware, code version, configuration, time)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import joulebench

TRACKED_PACKAGES = (
    "joulebench",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "nvidia-ml-py",
    "snakemake",
    "polars",
    "altair",
)

_SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "partition": "SLURM_JOB_PARTITION",
    "node": "SLURMD_NODENAME",
    "account": "SLURM_JOB_ACCOUNT",
}


def now_utc() -> str:
    """The current time as an ISO-8601 UTC string."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a configuration (key order does not matter)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def package_versions(
    names: tuple[str, ...] | list[str] = TRACKED_PACKAGES,
) -> dict[str, str | None]:
    """Installed versions of ``names``; None for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the joulebench checkout (None outside a git checkout)."""
    where = path or Path(joulebench.__file__).resolve().parent
    try:
        commit = _git(where, "rev-parse", "HEAD")
        dirty = bool(_git(where, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _git(where: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, check=True, timeout=10
    )
    return out.stdout.strip()


def torch_info() -> dict[str, Any]:
    """Torch build and the accelerator it sees."""
    try:
        import torch
    except ImportError:
        return {}
    info: dict[str, Any] = {
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
    }


def slurm_info() -> dict[str, str] | None:
    """SLURM job id, partition and node when running inside a SLURM job."""
    found = {k: os.environ[v] for k, v in _SLURM_VARS.items() if v in os.environ}
    return found or None


def collect(meters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything needed to say where a record came from, except its config and times."""
    return {
        "joulebench_version": joulebench.__version__,
        "git": git_state(),
        "packages": package_versions(),
        "host": host_info(),
        "torch": torch_info(),
        "slurm": slurm_info(),
        "meters": meters or [],
    }
