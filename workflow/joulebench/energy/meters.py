"""Building meters: one name or a list from the config → meters whose samplers run.

Several meters can run at once (:class:`MeterSet`); every device's energy says which one made
it. ``auto`` picks NVML on a CUDA job with a GPU; on a CPU job RAPL where it is readable, else the
labelled estimate. Serving builds its meter here too, with the estimate following the server's
process tree (``server_pid``) rather than this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from joulebench.core.errors import MeterError
from joulebench.energy import nvml, rapl
from joulebench.energy.base import Measurement, Meter
from joulebench.energy.choice import resolve
from joulebench.energy.estimate import CpuEstimateMeter
from joulebench.energy.trace import PowerTrace

log = logging.getLogger(__name__)


class MeterSet:
    """Several meters as one (e.g. GPU + CPU): each window opens on all, energy merged by device.

    The source is the meters' sources joined with ``+``; each device keeps its own label.
    """

    def __init__(self, meters: Sequence[Meter]) -> None:
        if not meters:
            raise MeterError("a meter set needs at least one meter")
        self.meters = list(meters)
        self.source = "+".join(m.source for m in self.meters)

    def begin_window(self, key: str) -> None:
        for m in self.meters:
            m.begin_window(key)

    def end_window(self, key: str) -> Measurement:
        parts = [m.end_window(key) for m in reversed(self.meters)][::-1]
        energy: dict[str, float] = {}
        sources: dict[str, str] = {}
        for part in parts:
            clash = set(energy) & set(part.energy_j)
            if clash:
                raise MeterError(f"two meters both measure {sorted(clash)}; pick one of them")
            energy |= part.energy_j
            sources |= part.sources or dict.fromkeys(part.energy_j, part.source)
        start = min(p.start_s for p in parts)
        end = max(p.end_s for p in parts)
        elapsed = max(p.time_s for p in parts)
        return Measurement(elapsed, energy, self.source, sources, start, end)

    def cancel_window(self, key: str) -> None:
        for m in self.meters:
            m.cancel_window(key)

    def trace(self) -> PowerTrace:
        return PowerTrace.concat(m.trace() for m in self.meters)

    def describe(self) -> dict[str, Any]:
        parts = [m.describe() for m in self.meters]
        merged_sources: dict[str, str] = {}
        fields: dict[str, str] = {}
        for p in parts:
            merged_sources |= p.get("sources", {})
            fields |= p.get("power_fields", {})
        return {
            "source": self.source,
            "kind": "several meters at once; each device's energy names its source",
            "meters": parts,
            "sources": merged_sources,
            "power_fields": fields,
            "sample_hz": max(float(p.get("sample_hz") or 0) for p in parts),
        }

    def close(self) -> None:
        errors = []
        for m in self.meters:
            try:
                m.close()
            except Exception as err:
                errors.append(err)
        if errors:
            raise errors[0]


def make_meter(
    name: str | Sequence[str],
    device: str,
    cpu_estimate: dict[str, float] | None = None,
    synchronize: Callable[[], None] | None = None,
    sample_hz: float = 0.0,
    powercap_root: str | None = None,
    server_pid: int | None = None,
) -> Meter:
    """Build the meter(s) a job asked for, their samplers running.

    A list builds every named meter and measures with all of them at once. ``server_pid``
    makes the estimate follow that process tree (a server) instead of this process.
    """
    names = resolve(name, device, powercap_root)
    root = powercap_root or rapl.DEFAULT_ROOT
    built: list[Meter] = []
    try:
        for n in names:
            if n == "nvml":
                built.append(nvml.NvmlMeter(None, synchronize, sample_hz))
            elif n == "rapl":
                built.append(rapl.RaplMeter.require(root, sample_hz))
            else:
                built.append(
                    CpuEstimateMeter(**(cpu_estimate or {}), sample_hz=sample_hz, pid=server_pid)
                )
    except BaseException:
        for m in built:
            m.close()
        raise
    return built[0] if len(built) == 1 else MeterSet(built)
