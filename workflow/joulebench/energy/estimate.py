"""The CPU estimate: a model of CPU power from CPU time, where no energy counter exists.

Formula, per window of wall time ``t`` in which the measured processes used ``c`` CPU-seconds on
a host with ``n`` logical cores:  E = idle_w * t + (tdp_w - idle_w) * c / n.
Power rises linearly from ``idle_w`` (nothing running) to ``tdp_w`` (every core busy), the same
linear-in-load model CodeCarbon uses without RAPL. It is a model, not a measurement: compare
configurations with it, do not quote its joules as the machine's. This is the only place the
formula lives.

Whose CPU time: this process (with its finished children) by default, or a process tree (a
server and everything it started) with ``pid``. The estimate models *this host's* CPU, so it
cannot measure a server that may run elsewhere (serving's ``external`` kind).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Protocol

import psutil

from joulebench.core.errors import MeterError
from joulebench.energy.base import Clock, Measurement, Windows
from joulebench.energy.sampler import Sampler
from joulebench.energy.trace import PowerTrace

FORMULA = "E = idle_w * t + (tdp_w - idle_w) * cpu_seconds / cores"
POWER_FIELD = "model:process_cpu_time"


class CpuTime(Protocol):
    """A source of cumulative CPU seconds."""

    def cpu_seconds(self) -> float: ...
    def describe(self) -> str: ...


class ThisProcess:
    """CPU seconds of this process and of its children that have finished."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())

    def cpu_seconds(self) -> float:
        t = self._process.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def describe(self) -> str:
        return f"this process (pid {self._process.pid}) and its finished children"


class ProcessTree:
    """CPU seconds of a process and its descendants, cheap enough to read every few ms.

    Finding descendants scans every process on the host, so the list is refreshed at most every
    ``refresh_s``; a descendant that exits between refreshes takes its CPU time with it.
    """

    def __init__(self, pid: int, refresh_s: float = 1.0) -> None:
        self.pid, self.refresh_s = pid, refresh_s
        self._procs: list[psutil.Process] = []
        self._found_at = -math.inf

    def _processes(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._found_at > self.refresh_s:
            try:
                root = psutil.Process(self.pid)
                self._procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                self._procs = []
            self._found_at = now
        return self._procs

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def describe(self) -> str:
        return f"process tree of pid {self.pid}"


def interval_cpu(
    delta_s: float, elapsed_s: float, cores: int, carry_s: float
) -> tuple[float, float]:
    """(CPU seconds an interval used, CPU seconds carried to the next) for a trace interval.

    ``delta_s`` is the CPU time read over the interval, ``carry_s`` what earlier intervals
    were credited beyond their cores; the interval uses at most ``elapsed_s × cores``.
    """
    busy = max(delta_s, 0.0) + carry_s
    used = min(busy, elapsed_s * cores) if elapsed_s > 0 else 0.0
    return used, busy - used


class CpuEstimateMeter:
    """Estimated CPU energy where no counter exists (labelled ``estimate`` everywhere).

    Process CPU time advances in clock ticks (10 ms), so keep windows well above that;
    utilisation is capped at every core busy. With ``sample_hz`` > 0 a trace applies the same
    formula to each sampling interval (power = idle_w + (tdp_w − idle_w) · utilisation), so
    phases and requests can be attributed and plotted; at 20 Hz one 10 ms tick is 20% of one
    core, so single samples are coarse.
    """

    source = "estimate"

    def __init__(
        self,
        idle_w: float = 10.0,
        tdp_w: float = 45.0,
        cores: int | None = None,
        sample_hz: float = 0.0,
        pid: int | None = None,
        cpu: CpuTime | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        if tdp_w <= 0 or idle_w < 0 or idle_w > tdp_w:
            raise MeterError(f"cpu_estimate needs 0 <= idle_w <= tdp_w, got {idle_w}, {tdp_w}")
        self.idle_w = idle_w
        self.tdp_w = tdp_w
        self.cores = cores or psutil.cpu_count(logical=True) or 1
        self.cpu: CpuTime = cpu or (ProcessTree(pid) if pid is not None else ThisProcess())
        self._windows = Windows(clock)
        self._last: tuple[float, float] | None = None
        self._carry_s = 0.0  # CPU seconds beyond an interval's cores, owed to the next one
        self._sampler = (
            Sampler(self._sample, sample_hz, "estimate-sampler", clock) if sample_hz else None
        )
        if self._sampler:
            self._sampler.start()

    def power_w(self, busy_cpu_s: float, elapsed_s: float) -> tuple[float, float]:
        """(utilisation of all cores, modelled power) for ``busy_cpu_s`` over ``elapsed_s``."""
        util = min(max(busy_cpu_s, 0.0) / (elapsed_s * self.cores), 1.0) if elapsed_s > 0 else 0.0
        return util, self.idle_w + (self.tdp_w - self.idle_w) * util

    def _sample(self, t: float) -> list[dict[str, Any]]:
        """One trace point: the modelled power over the interval since the last sample.

        CPU time arrives in clock ticks (10 ms per process), so an interval of a few ticks can
        be credited more CPU time than its cores could give. That excess is carried into the
        next interval instead of being capped away, so the trace holds the same CPU time as a
        window over the same span (up to one interval's cap at its end).
        """
        cpu = self.cpu.cpu_seconds()
        util = power = None
        if self._last is not None:
            elapsed = t - self._last[0]
            used, self._carry_s = interval_cpu(
                cpu - self._last[1], elapsed, self.cores, self._carry_s
            )
            util, power = self.power_w(used, elapsed)
        self._last = (t, cpu)
        return [
            {
                "device": "cpu",
                "source": self.source,
                "power_w": power,
                "power_field": POWER_FIELD,
                "interpolation": "interval",
                "cpu_util": util,
            }
        ]

    def begin_window(self, key: str) -> None:
        if self._sampler:
            self._sampler.sample_now()
        self._windows.begin(key, self.cpu.cpu_seconds())

    def end_window(self, key: str) -> Measurement:
        cpu_now = self.cpu.cpu_seconds()
        start, end, cpu_start = self._windows.end(key)
        if self._sampler:
            self._sampler.sample_now()
        elapsed = end - start
        _, power = self.power_w(cpu_now - cpu_start, elapsed)
        energy = power * elapsed
        return Measurement(elapsed, {"cpu": energy}, self.source, {"cpu": self.source}, start, end)

    def cancel_window(self, key: str) -> None:
        self._windows.cancel(key)

    def trace(self) -> PowerTrace:
        return self._sampler.trace() if self._sampler else PowerTrace.empty()

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": "model of CPU power from CPU time (not a measurement)",
            "formula": FORMULA,
            "idle_w": self.idle_w,
            "tdp_w": self.tdp_w,
            "cores": self.cores,
            "processes": self.cpu.describe(),
            "sources": {"cpu": self.source},
            "power_fields": {"cpu": POWER_FIELD} if self._sampler else {},
            **(self._sampler.describe() if self._sampler else {"sample_hz": 0}),
        }

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()

    def __enter__(self) -> CpuEstimateMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
