"""What a serving job measures: the server's energy in a window, and a power trace over time.

The server is another process, so the CPU estimate must follow *its* CPU time (the server's
process tree), not the load generator's; ``ServerEstimateMeter`` does that with the same formula
and the same ``estimate`` label as ``meters.CpuEstimateMeter``. On a GPU the NVML meter already
covers the server. ``TraceSampler`` reads a cumulative energy source every ``interval_s`` on one
background thread and returns an ``attribution.PowerTrace``; a finer sampler (issue 3's power
trace) can replace it without touching the attribution math.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

from joulebench.attribution import PowerTrace
from joulebench.meters import CpuEstimateMeter, Meter, NvmlMeter, make_meter

log = logging.getLogger(__name__)


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


class ServerEstimateMeter(CpuEstimateMeter):
    """The CPU estimate over the server's process tree (labelled ``estimate`` like its parent)."""

    def __init__(self, pid: int, idle_w: float = 10.0, tdp_w: float = 45.0) -> None:
        super().__init__(idle_w=idle_w, tdp_w=tdp_w)
        self.pid = pid
        self._tree = ProcessTree(pid)

    def _cpu_seconds(self) -> float:
        return self._tree.cpu_seconds()

    def energy_now(self) -> float:
        """Cumulative estimated energy (J) on an arbitrary origin: the trace's reading."""
        return (
            self.idle_w * time.perf_counter()
            + (self.tdp_w - self.idle_w) * self._cpu_seconds() / self.cores
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"processes": f"server process tree (pid {self.pid})"}


def server_meter(
    name: str, device: str, cpu_estimate: dict[str, float], server_pid: int | None
) -> Meter:
    """The meter of a serving window: NVML on a GPU; else the estimate over the server's tree."""
    meter = make_meter(name, device, cpu_estimate)
    if isinstance(meter, CpuEstimateMeter) and server_pid is not None:
        meter.close()
        return ServerEstimateMeter(server_pid, **cpu_estimate)
    return meter


def energy_reader(meter: Meter) -> Callable[[], float] | None:
    """A cumulative-energy reading (J) from the meter's own source, for the trace sampler."""
    if isinstance(meter, CpuEstimateMeter):
        # the estimate's formula on an arbitrary origin: idle_w * t + (tdp_w - idle_w) * cpu / n
        def estimate_now() -> float:
            dynamic = (meter.tdp_w - meter.idle_w) * meter._cpu_seconds() / meter.cores
            return meter.idle_w * time.perf_counter() + dynamic

        return estimate_now
    if isinstance(meter, NvmlMeter):
        return lambda: sum(meter._read_mj().values()) / 1000.0
    return None


class TraceSampler:
    """Sample a cumulative energy reading on one background thread; stop() → PowerTrace."""

    def __init__(
        self,
        read_j: Callable[[], float],
        interval_s: float,
        source: str,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.read_j, self.interval_s, self.source, self.clock = read_j, interval_s, source, clock
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-trace", daemon=True)

    def _sample(self) -> None:
        energy = self.read_j()
        self._samples.append((self.clock(), energy))

    def _run(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            self._sample()
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - self.clock()))

    def start(self) -> TraceSampler:
        self._thread.start()
        return self

    def stop(self, origin: float = 0.0) -> PowerTrace:
        """Stop, take a last sample, and return the trace with times relative to ``origin``."""
        self._stop.set()
        self._thread.join()
        self._sample()
        t = np.array([s[0] for s in self._samples]) - origin
        e = np.array([s[1] for s in self._samples])
        keep = np.concatenate([[True], np.diff(t) > 0])
        return PowerTrace(t[keep], e[keep] - e[0], self.source)
