"""Energy meters: open a named window, close it, get a typed Measurement that names its source.

Meters share one small protocol so that the benchmark harness never cares which hardware it
runs on:

- ``nvml``: the GPU's own energy counter (delta of ``nvmlDeviceGetTotalEnergyConsumption``), plus
  a background power trace (instant power where the GPU has it); a GPU without the counter is
  measured by integrating the trace, and its energy is labelled ``nvml-trace``.
- ``rapl``: CPU package and DRAM counters from ``/sys/class/powercap`` (see :mod:`joulebench.rapl`).
- ``estimate``: a model of CPU power from process CPU time where no counter exists, labelled
  ``estimate`` in every record.

Several meters can run at once (:class:`MeterSet`); every device's energy says which one made it.
Absent hardware is a null object (no devices, empty trace), never ``None`` checks in the harness.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import psutil

from joulebench.errors import MeterError
from joulebench.sampler import Sampler
from joulebench.trace import PowerTrace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    """Energy and time of one window, per device, with the meter that produced each figure.

    ``sources`` maps each device to how its energy was obtained (``nvml``, ``nvml-trace``,
    ``rapl``, ``estimate``); ``start_s``/``end_s`` are the window edges on ``time.perf_counter``,
    the clock of every power trace.
    """

    time_s: float
    energy_j: dict[str, float]
    source: str
    sources: dict[str, str] = field(default_factory=dict)
    start_s: float = math.nan
    end_s: float = math.nan

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
    def trace(self) -> PowerTrace: ...
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

    def end(self, key: str) -> tuple[float, float, Any]:
        """(start, end, reading at start) of the window ``key``, which is closed."""
        try:
            start, reading = self.open.pop(key)
        except KeyError:
            raise MeterError(f"measurement window '{key}' was never opened") from None
        return start, time.perf_counter(), reading


class CpuEstimateMeter:
    """Estimated CPU energy where no counter exists (labelled ``estimate`` everywhere).

    Formula, per window of wall time ``t`` in which this process used ``c`` CPU-seconds on a host
    with ``n`` logical cores:  E = idle_w * t + (tdp_w - idle_w) * c / n.
    That is, power rises linearly from ``idle_w`` (nothing running) to ``tdp_w`` (every core busy),
    the same linear-in-load model CodeCarbon uses without RAPL. It is a model, not a measurement:
    compare configurations with it, do not quote its joules as the machine's. Process CPU time
    advances in clock ticks (10 ms), so keep windows well above that (``min_window_s``);
    utilisation is capped at every core busy.

    With ``sample_hz`` > 0 a trace applies the same formula to each sampling interval (power =
    idle_w + (tdp_w − idle_w) · utilisation), so phases can be attributed and plotted; at 20 Hz
    one 10 ms tick is 20% of one core, so single samples are coarse.
    """

    source = "estimate"

    def __init__(
        self,
        idle_w: float = 10.0,
        tdp_w: float = 45.0,
        cores: int | None = None,
        sample_hz: float = 0.0,
    ):
        if tdp_w <= 0 or idle_w < 0 or idle_w > tdp_w:
            raise MeterError(f"cpu_estimate needs 0 <= idle_w <= tdp_w, got {idle_w}, {tdp_w}")
        self.idle_w = idle_w
        self.tdp_w = tdp_w
        self.cores = cores or psutil.cpu_count(logical=True) or 1
        self._process = psutil.Process(os.getpid())
        self._windows = _Windows()
        self._last: tuple[float, float] | None = None
        self._sampler = Sampler(self._sample, sample_hz, "estimate-sampler") if sample_hz else None
        if self._sampler:
            self._sampler.start()

    def _cpu_seconds(self) -> float:
        t = self._process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _power(self, busy_cpu_s: float, elapsed_s: float) -> tuple[float, float]:
        """(utilisation of all cores, modelled power) for ``busy_cpu_s`` over ``elapsed_s``."""
        util = min(max(busy_cpu_s, 0.0) / (elapsed_s * self.cores), 1.0) if elapsed_s > 0 else 0.0
        return util, self.idle_w + (self.tdp_w - self.idle_w) * util

    def _sample(self, t: float) -> list[dict[str, Any]]:
        cpu = self._cpu_seconds()
        util = power = None
        if self._last is not None:
            util, power = self._power(cpu - self._last[1], t - self._last[0])
        self._last = (t, cpu)
        return [
            {
                "device": "cpu",
                "source": self.source,
                "power_w": power,
                "power_field": "model:process_cpu_time",
                "interpolation": "interval",
                "cpu_util": util,
            }
        ]

    def begin_window(self, key: str) -> None:
        self._windows.begin(key, self._cpu_seconds())

    def end_window(self, key: str) -> Measurement:
        cpu_now = self._cpu_seconds()
        start, end, cpu_start = self._windows.end(key)
        elapsed = end - start
        busy = min(max(cpu_now - cpu_start, 0.0), elapsed * self.cores)
        energy = self.idle_w * elapsed + (self.tdp_w - self.idle_w) * busy / self.cores
        return Measurement(elapsed, {"cpu": energy}, self.source, {"cpu": self.source}, start, end)

    def trace(self) -> PowerTrace:
        return self._sampler.trace() if self._sampler else PowerTrace.empty()

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": "model of CPU power from process CPU time (not a measurement)",
            "formula": "E = idle_w * t + (tdp_w - idle_w) * cpu_seconds / cores",
            "idle_w": self.idle_w,
            "tdp_w": self.tdp_w,
            "cores": self.cores,
            "sources": {"cpu": self.source},
            "power_fields": {"cpu": "model:process_cpu_time"} if self._sampler else {},
            **(self._sampler.describe() if self._sampler else {"sample_hz": 0}),
        }

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()

    def __enter__(self) -> CpuEstimateMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _maybe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


#: How NVML reports a power reading, as recorded in every trace row and record.
POWER_INSTANT = "NVML_FI_DEV_POWER_INSTANT"
POWER_USAGE = "nvmlDeviceGetPowerUsage"  # a 1 s average on Ampere (but GA100) and newer
_VALUE_FIELDS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


class NvmlMeter:
    """GPU energy from NVML's total-energy counter (mJ since driver load, Volta and newer).

    Devices are keyed as the framework sees them (``cuda:0``, ``cuda:1``, ...), mapped to NVML
    handles by UUID so that CUDA_VISIBLE_DEVICES is honoured. The device is synchronised at both
    window edges so queued kernels land in the right window.

    With ``sample_hz`` > 0 a background thread records, per device, power (the instant-power
    field where the GPU has it, else ``nvmlDeviceGetPowerUsage``, which is a 1 s average on
    Ampere and newer), SM clock, memory used, temperature and the counter itself. A device
    without the energy counter — or whose counter fails mid-run — is measured by integrating
    that trace, and its energy is labelled ``nvml-trace``. A power field that fails mid-run
    (e.g. NVML_ERROR_NOT_SUPPORTED) is replaced by the next one, and the switch is recorded.
    """

    source = "nvml"

    def __init__(
        self,
        nvml: ModuleType | None = None,
        synchronize: Callable[[], None] | None = None,
        sample_hz: float = 0.0,
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
        self._counter = {name: self._has_counter(h) for name, h in self._handles.items()}
        self._power_field = {name: self._probe_power(h) for name, h in self._handles.items()}
        self._field_changes: list[dict[str, Any]] = []
        self._read_errors: dict[str, int] = dict.fromkeys(self._handles, 0)
        for name, has_counter in self._counter.items():
            if has_counter:
                continue
            if not sample_hz or self._power_field[name] is None:
                raise MeterError(
                    f"GPU {name} has no NVML energy counter (it needs Volta or newer)"
                    + (
                        " and no power reading either"
                        if self._power_field[name] is None
                        else "; set measurement.sample_hz > 0 to integrate its power trace"
                    )
                )
            log.warning("GPU %s has no energy counter: integrating its power trace", name)
        self._windows = _Windows()
        self._sampler = Sampler(self._sample, sample_hz, "nvml-sampler") if sample_hz else None
        if self._sampler:
            self._sampler.start()

    # -- reading the hardware ---------------------------------------------------------------
    def _has_counter(self, handle: Any) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except self._nvml.NVMLError:
            return False
        return True

    def _instant_mw(self, handle: Any) -> float:
        nvml = self._nvml
        value = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(value.nvmlReturn)
        return float(getattr(value.value, _VALUE_FIELDS[value.valueType]))

    def _probe_power(self, handle: Any) -> str | None:
        for name, read in (
            (POWER_INSTANT, lambda: self._instant_mw(handle)),
            (POWER_USAGE, lambda: self._nvml.nvmlDeviceGetPowerUsage(handle)),
        ):
            try:
                read()
            except self._nvml.NVMLError:
                continue
            return name
        return None

    def _power_w(self, name: str, handle: Any, t: float) -> float | None:
        nvml = self._nvml
        if self._power_field[name] == POWER_INSTANT:
            try:
                return self._instant_mw(handle) / 1000.0
            except nvml.NVMLError as err:
                self._switch_field(name, POWER_USAGE, t, err)
        if self._power_field[name] == POWER_USAGE:
            try:
                return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except nvml.NVMLError as err:
                self._read_errors[name] += 1
                if self._read_errors[name] == 1:
                    log.warning("GPU %s: power reading failed (%s)", name, err)
        return None

    def _switch_field(self, name: str, to: str, t: float, err: Exception) -> None:
        was = self._power_field[name]
        log.warning("GPU %s: %s failed mid-run (%s); using %s", name, was, err, to)
        self._field_changes.append(
            {"device": name, "from": was, "to": to, "at": t, "error": str(err)}
        )
        self._power_field[name] = to

    def _counter_j(self, name: str, handle: Any) -> float | None:
        if not self._counter[name]:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) / 1000.0
        except self._nvml.NVMLError as err:
            log.warning("GPU %s: energy counter failed (%s); integrating the trace", name, err)
            self._counter[name] = False
            self._field_changes.append(
                {"device": name, "from": "energy counter", "to": "trace", "error": str(err)}
            )
            return None

    def _sample(self, t: float) -> list[dict[str, Any]]:
        nvml, rows = self._nvml, []
        for name, h in self._handles.items():
            memory = _maybe(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
            rows.append(
                {
                    "device": name,
                    "source": self.source,
                    "power_w": self._power_w(name, h, t),
                    "power_field": self._power_field[name],
                    "interpolation": "instant",
                    "sm_clock_mhz": _maybe(
                        lambda h=h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)
                    ),
                    "memory_used_mib": memory,
                    "temperature_c": _maybe(
                        lambda h=h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
                    ),
                    "energy_counter_j": self._counter_j(name, h),
                }
            )
        return rows

    def _read_counters(self) -> dict[str, float | None]:
        return {name: self._counter_j(name, h) for name, h in self._handles.items()}

    # -- windows ----------------------------------------------------------------------------
    def begin_window(self, key: str) -> None:
        self._sync()
        if self._sampler:
            self._sampler.sample_now()
        self._windows.begin(key, self._read_counters())

    def end_window(self, key: str) -> Measurement:
        self._sync()
        now = self._read_counters()
        if self._sampler:
            self._sampler.sample_now()
        start_t, end_t, start = self._windows.end(key)
        energy: dict[str, float] = {}
        sources: dict[str, str] = {}
        for name in self._handles:
            if start[name] is not None and now[name] is not None:
                energy[name], sources[name] = now[name] - start[name], self.source
                continue
            if self._sampler is None:
                raise MeterError(
                    f"GPU {name}: the energy counter failed during window '{key}' and there is "
                    "no power trace to fall back on (measurement.sample_hz is 0)"
                )
            trace_j = self._sampler.trace().energy([start_t], [end_t], [name])[name][0]
            energy[name], sources[name] = float(trace_j), "nvml-trace"
        return Measurement(end_t - start_t, energy, self.source, sources, start_t, end_t)

    def trace(self) -> PowerTrace:
        return self._sampler.trace() if self._sampler else PowerTrace.empty()

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
                "energy_counter": self._counter[name],
                "power_field": self._power_field[name],
                "power_read_errors": self._read_errors[name],
            }
        return {
            "source": self.source,
            "kind": "NVML total energy counter delta (nvmlDeviceGetTotalEnergyConsumption)",
            "driver": _maybe(lambda: _text(nvml.nvmlSystemGetDriverVersion())),
            "devices": devices,
            "sources": {n: self.source if c else "nvml-trace" for n, c in self._counter.items()},
            "power_fields": dict(self._power_field) if self._sampler else {},
            "power_field_changes": list(self._field_changes),
            **(self._sampler.describe() if self._sampler else {"sample_hz": 0}),
        }

    def close(self) -> None:
        try:
            if self._sampler:
                self._sampler.stop()
        finally:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()

    def __enter__(self) -> NvmlMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def make_meter(
    name: str | Sequence[str],
    device: str,
    cpu_estimate: dict[str, float] | None = None,
    synchronize: Callable[[], None] | None = None,
    sample_hz: float = 0.0,
    powercap_root: str | None = None,
) -> Meter:
    """Build the meter(s) a job asked for, their samplers running.

    ``auto``: NVML on a CUDA job with a GPU; on a CPU job RAPL where it is readable, else the
    labelled estimate. A list builds every named meter and measures with all of them at once.
    """
    from joulebench import rapl

    names = meter_names(name)
    root = powercap_root or rapl.DEFAULT_ROOT
    if names == ["auto"]:
        names = ["estimate"]
        if device == "cuda":
            if _load_pynvml() is not None:
                names = ["nvml"]
            else:
                log.warning("no NVML on this CUDA job; falling back to the CPU estimate")
        elif rapl.readable(root):
            names = ["rapl"]
    built: list[Meter] = []
    try:
        for n in names:
            if n == "nvml":
                built.append(NvmlMeter(None, synchronize, sample_hz))
            elif n == "rapl":
                built.append(rapl.RaplMeter.require(root, sample_hz))
            else:
                built.append(CpuEstimateMeter(**(cpu_estimate or {}), sample_hz=sample_hz))
    except BaseException:
        for m in built:
            m.close()
        raise
    return built[0] if len(built) == 1 else MeterSet(built)
