"""Energy meters: open a named window, close it, get a typed Measurement that names its source.

Meters share one small protocol so that the benchmark harness never cares which hardware it
runs on. NVML reads the GPU's own energy counter; ``estimate`` models CPU power from process CPU
time where no counter exists, and says so in every record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import psutil

from joulebench.errors import MeterError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    """Energy and time of one window, per device, with the meter that produced it."""

    time_s: float
    energy_j: dict[str, float]
    source: str

    @property
    def total_j(self) -> float:
        """Energy summed over every device of the window."""
        return float(sum(self.energy_j.values()))

    @property
    def avg_power_w(self) -> float:
        return self.total_j / self.time_s if self.time_s > 0 else float("nan")


class Meter(Protocol):
    """What the harness needs from a meter."""

    source: str

    def begin_window(self, key: str) -> None: ...
    def end_window(self, key: str) -> Measurement: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass
class _Windows:
    """Bookkeeping of open windows, shared by every meter: duplicate or unknown keys are errors."""

    open: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def begin(self, key: str, reading: Any) -> None:
        if key in self.open:
            raise MeterError(f"measurement window '{key}' is already open")
        self.open[key] = (time.perf_counter(), reading)

    def end(self, key: str) -> tuple[float, Any]:
        try:
            start, reading = self.open.pop(key)
        except KeyError:
            raise MeterError(f"measurement window '{key}' was never opened") from None
        return time.perf_counter() - start, reading


class CpuEstimateMeter:
    """Estimated CPU energy where no counter exists (labelled ``estimate`` everywhere).

    Formula, per window of wall time ``t`` in which this process used ``c`` CPU-seconds on a host
    with ``n`` logical cores:  E = idle_w * t + (tdp_w - idle_w) * c / n.
    That is, power rises linearly from ``idle_w`` (nothing running) to ``tdp_w`` (every core busy),
    the same linear-in-load model CodeCarbon uses without RAPL. It is a model, not a measurement:
    compare configurations with it, do not quote its joules as the machine's. Process CPU time
    advances in clock ticks (10 ms), so keep windows well above that (``min_window_s``);
    utilisation is capped at every core busy.
    """

    source = "estimate"

    def __init__(self, idle_w: float = 10.0, tdp_w: float = 45.0, cores: int | None = None):
        if tdp_w <= 0 or idle_w < 0 or idle_w > tdp_w:
            raise MeterError(f"cpu_estimate needs 0 <= idle_w <= tdp_w, got {idle_w}, {tdp_w}")
        self.idle_w = idle_w
        self.tdp_w = tdp_w
        self.cores = cores or psutil.cpu_count(logical=True) or 1
        self._process = psutil.Process(os.getpid())
        self._windows = _Windows()

    def _cpu_seconds(self) -> float:
        t = self._process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def begin_window(self, key: str) -> None:
        self._windows.begin(key, self._cpu_seconds())

    def end_window(self, key: str) -> Measurement:
        cpu_now = self._cpu_seconds()
        elapsed, cpu_start = self._windows.end(key)
        busy = min(max(cpu_now - cpu_start, 0.0), elapsed * self.cores)
        energy = self.idle_w * elapsed + (self.tdp_w - self.idle_w) * busy / self.cores
        return Measurement(elapsed, {"cpu": energy}, self.source)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": "model of CPU power from process CPU time (not a measurement)",
            "formula": "E = idle_w * t + (tdp_w - idle_w) * cpu_seconds / cores",
            "idle_w": self.idle_w,
            "tdp_w": self.tdp_w,
            "cores": self.cores,
        }

    def close(self) -> None:
        pass


def _load_pynvml() -> ModuleType | None:
    """The pynvml module if NVML is usable here, else None (no GPU is not an error)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        log.debug("NVML unavailable: %s", err)
        return None
    return pynvml


def visible_gpu_uuids(nvml: ModuleType) -> list[str]:
    """UUIDs of the GPUs this process may use, in the framework's order (CUDA_VISIBLE_DEVICES)."""
    count = nvml.nvmlDeviceGetCount()
    uuids = [
        _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)
    ]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return uuids
    chosen: list[str] = []
    for item in (v.strip() for v in visible.split(",") if v.strip()):
        if item.isdigit():
            idx = int(item)
            if idx >= count:
                raise MeterError(f"CUDA_VISIBLE_DEVICES names GPU {idx}; NVML sees {count}")
            chosen.append(uuids[idx])
        else:
            matches = [u for u in uuids if u.startswith(item) or u.startswith("GPU-" + item)]
            if not matches:
                raise MeterError(f"CUDA_VISIBLE_DEVICES names '{item}', which NVML does not see")
            chosen.append(matches[0])
    return chosen


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlMeter:
    """GPU energy from NVML's total-energy counter (mJ since driver load, Volta and newer).

    Devices are keyed as the framework sees them (``cuda:0``, ``cuda:1``, ...), mapped to NVML
    handles by UUID so that CUDA_VISIBLE_DEVICES is honoured.
    """

    source = "nvml"

    def __init__(
        self,
        nvml: ModuleType | None = None,
        synchronize: Callable[[], None] | None = None,
    ) -> None:
        nvml = nvml or _load_pynvml()
        if nvml is None:
            raise MeterError("meter 'nvml' needs an NVIDIA GPU and driver; none is visible here")
        self._nvml = nvml
        self._sync = synchronize or (lambda: None)
        uuids = visible_gpu_uuids(nvml)
        if not uuids:
            raise MeterError("meter 'nvml': no GPU is visible to this job")
        self._handles = {
            f"cuda:{i}": nvml.nvmlDeviceGetHandleByUUID(uuid) for i, uuid in enumerate(uuids)
        }
        self._uuids = dict(zip(self._handles, uuids, strict=True))
        for name, handle in self._handles.items():
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except nvml.NVMLError as err:
                raise MeterError(
                    f"GPU {name} has no NVML energy counter ({err}); it needs Volta or newer"
                ) from err
        self._windows = _Windows()

    def _read_mj(self) -> dict[str, int]:
        return {
            name: int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h))
            for name, h in self._handles.items()
        }

    def begin_window(self, key: str) -> None:
        self._sync()
        self._windows.begin(key, self._read_mj())

    def end_window(self, key: str) -> Measurement:
        self._sync()
        now = self._read_mj()
        elapsed, start = self._windows.end(key)
        energy = {name: (now[name] - start[name]) / 1000.0 for name in now}
        return Measurement(elapsed, energy, self.source)

    def describe(self) -> dict[str, Any]:
        nvml = self._nvml
        devices = {}
        for name, handle in self._handles.items():
            devices[name] = {
                "uuid": self._uuids[name],
                "name": _text(nvml.nvmlDeviceGetName(handle)),
                "power_limit_w": _maybe(
                    lambda h=handle: nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
                ),
            }
        return {
            "source": self.source,
            "kind": "NVML total energy counter delta (nvmlDeviceGetTotalEnergyConsumption)",
            "driver": _maybe(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            "devices": devices,
        }

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def _maybe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


METERS = ("auto", "nvml", "estimate")


def make_meter(
    name: str,
    device: str,
    cpu_estimate: dict[str, float] | None = None,
    synchronize: Callable[[], None] | None = None,
) -> Meter:
    """Build the meter a job asked for. ``auto``: NVML on a CUDA job with a GPU, else estimate."""
    if name not in METERS:
        raise MeterError(f"unknown meter '{name}'; allowed: {', '.join(METERS)}")
    if name == "nvml" or (name == "auto" and device == "cuda"):
        nvml = _load_pynvml()
        if nvml is not None or name == "nvml":
            return NvmlMeter(nvml, synchronize)
        log.warning("no NVML on this CUDA job; falling back to the CPU estimate")
    return CpuEstimateMeter(**(cpu_estimate or {}))
