"""NVML: the GPU's own energy counter, and a background power trace of every visible GPU.

Energy of a window is the delta of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver
load, Volta and newer). The trace records instant power where the GPU has it
(``NVML_FI_DEV_POWER_INSTANT``), else ``nvmlDeviceGetPowerUsage`` (a 1 s average on Ampere and
newer); a GPU without the counter is measured by integrating that trace, labelled
``nvml-trace``. No GPU (``nvmlInit`` failing) is not an error: :func:`load_pynvml` gives None.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from joulebench.core.errors import MeterError
from joulebench.energy.base import Clock, Measurement, Windows
from joulebench.energy.sampler import Sampler
from joulebench.energy.trace import PowerTrace

log = logging.getLogger(__name__)


def load_pynvml() -> ModuleType | None:
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
    uuids = [text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
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


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def maybe(fn: Callable[[], Any]) -> Any:
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
        clock: Clock = time.perf_counter,
    ) -> None:
        nvml = nvml or load_pynvml()
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
        self._windows = Windows(clock)
        self._sampler = (
            Sampler(self._sample, sample_hz, "nvml-sampler", clock) if sample_hz else None
        )
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
            memory = maybe(lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
            rows.append(
                {
                    "device": name,
                    "source": self.source,
                    "power_w": self._power_w(name, h, t),
                    "power_field": self._power_field[name],
                    "interpolation": "instant",
                    "sm_clock_mhz": maybe(
                        lambda h=h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)
                    ),
                    "memory_used_mib": memory,
                    "temperature_c": maybe(
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

    def cancel_window(self, key: str) -> None:
        self._windows.cancel(key)

    def trace(self) -> PowerTrace:
        return self._sampler.trace() if self._sampler else PowerTrace.empty()

    def describe(self) -> dict[str, Any]:
        nvml = self._nvml
        devices = {}
        for name, handle in self._handles.items():
            devices[name] = {
                "uuid": self._uuids[name],
                "name": text(nvml.nvmlDeviceGetName(handle)),
                "power_limit_w": maybe(
                    lambda h=handle: nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
                ),
                "energy_counter": self._counter[name],
                "power_field": self._power_field[name],
                "power_read_errors": self._read_errors[name],
            }
        return {
            "source": self.source,
            "kind": "NVML total energy counter delta (nvmlDeviceGetTotalEnergyConsumption)",
            "driver": maybe(lambda: text(nvml.nvmlSystemGetDriverVersion())),
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
