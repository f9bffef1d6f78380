"""Which meters a job asks for: the meter names, the check of a choice (one name or a list) and
``auto`` resolved on this host. Light on purpose: checking a config (at every DAG build) reads
these names without importing the meters themselves (numpy, polars).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from joulebench.core.errors import MeterError

log = logging.getLogger("joulebench.energy.meters")

#: Meters that read this host's hardware (an external server may be measured only by these).
HARDWARE_METERS = ("nvml", "rapl")

#: Every meter name a config or `--meter` may give (`auto` picks one on the host).
METERS = ("auto", "nvml", "rapl", "estimate")


def meter_names(value: str | Sequence[str], key: str = "measurement.meter") -> list[str]:
    """Check a meter choice (one name or a list) and return it as a list of names."""
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        allowed = ", ".join(METERS)
        raise MeterError(f"{key}: give a meter name or a non-empty list; allowed: {allowed}")
    for name in names:
        if name not in METERS:
            raise MeterError(f"unknown meter '{name}'; allowed: {', '.join(METERS)}")
    if len(set(names)) != len(names):
        raise MeterError(f"{key}: meter listed twice in {names}")
    if len(names) > 1 and "auto" in names:
        raise MeterError(f"{key}: 'auto' picks the meters itself and cannot be combined: {names}")
    if {"rapl", "estimate"} <= set(names):
        raise MeterError(f"{key}: 'rapl' and 'estimate' both give the CPU's energy; pick one")
    return names


def resolve(name: str | Sequence[str], device: str, powercap_root: str | None = None) -> list[str]:
    """The meter names a job measures with: ``auto`` resolved on this host, lists checked.

    ``auto`` is NVML on a ``cuda`` (or ``auto``) device where NVML sees a GPU; the estimate on
    a ``cuda`` device without it; otherwise RAPL where readable, else the estimate.
    """
    names = meter_names(name)
    if names != ["auto"]:
        return names
    from joulebench.energy import nvml, rapl  # the meters themselves, only for auto

    if device in ("cuda", "auto") and nvml.load_pynvml() is not None:
        return ["nvml"]
    if device == "cuda":
        log.warning("no NVML on this CUDA job; falling back to the CPU estimate")
        return ["estimate"]
    return ["rapl"] if rapl.readable(powercap_root or rapl.DEFAULT_ROOT) else ["estimate"]
