"""Fake energy hardware whose energy over any interval is known exactly (tests only).

- :class:`SquareWave`: power that alternates between two levels on the shared monotonic clock
  (``time.perf_counter`` = CLOCK_MONOTONIC, the same in every process of the host), with its
  exact cumulative energy — the independent expectation every meter test compares against.
- :class:`FakeNvml`: a stand-in for the ``pynvml`` module. With ``live=True`` each counter
  advances by its power over real time; with ``profiles`` it reads a square wave directly.
  ``tests/fake_pynvml/pynvml.py`` puts one in front of a subprocess (``joulebench serve``,
  Snakemake) through PYTHONPATH and ``JOULEBENCH_FAKE_NVML``.
- :class:`LivePowercap`: a powercap tree whose ``energy_uj`` counters a background thread
  advances with a square wave while a session runs; it logs every value it writes, with the
  instant it stands for.

Both log their counters (FakeNvml every read, to a file too for a subprocess; LivePowercap every
write), so a test finds the two readings a meter's window used (:func:`read_pair`) and compares
the window with the square wave's exact energy between those instants; how far the window's
stamped edges lie from the readings is checked on its own, as timing, never folded into the
energy's tolerance.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

MAX_UJ = 262_143_328_850

#: How far a window's stamped edge may lie from the counter reading it used (seconds): a bound
#: on timestamp bookkeeping only (the energy is checked exactly over the readings' instants).
EDGE_S = 0.25


def read_pair(
    log: list[tuple[float, int]], delta: int, start: float, end: float
) -> tuple[float, float]:
    """The logged readings ``(t_a, t_b)`` whose counter values differ by exactly ``delta``.

    ``log`` holds (instant, counter value) of one device; where several pairs differ by
    ``delta``, the one closest to the window's edges ``(start, end)``. AssertionError if none:
    the meter's figure is no difference of two readings the hardware gave.
    """
    times: dict[int, list[float]] = {}
    for t, v in log:
        times.setdefault(v, []).append(t)
    best: tuple[float, float, float] | None = None
    for t_a, v_a in log:
        for t_b in times.get(v_a + delta, []):
            score = abs(t_a - start) + abs(t_b - end)
            if t_b >= t_a and (best is None or score < best[0]):
                best = (score, t_a, t_b)
    assert best is not None, f"no two logged readings differ by {delta}"
    return best[1], best[2]


@dataclass(frozen=True)
class SquareWave:
    """``high_w`` for the first half of every ``period_s``, ``base_w`` for the second."""

    base_w: float
    high_w: float
    period_s: float

    def power_w(self, t: float) -> float:
        return self.high_w if (t % self.period_s) < self.period_s / 2 else self.base_w

    def energy_j(self, t: float) -> float:
        """Energy from clock time 0 to ``t``."""
        half = self.period_s / 2
        n = math.floor(t / self.period_s)
        high_s = n * half + min(t - n * self.period_s, half)
        return self.base_w * t + (self.high_w - self.base_w) * high_s

    def between(self, a: float, b: float) -> float:
        return self.energy_j(b) - self.energy_j(a)

    def edges(self, a: float, b: float) -> int:
        """Power steps inside ``[a, b]``."""
        return math.floor(b / (self.period_s / 2)) - math.floor(a / (self.period_s / 2))

    def to_list(self) -> list[float]:
        return [self.base_w, self.high_w, self.period_s]


class FakeNVMLError(Exception):
    def __init__(self, value: object = "error") -> None:
        super().__init__(value)
        self.value = value


class FakeNvml:
    """A stand-in for the pynvml module: devices with energy counters and power the test controls.

    With ``live=True`` each device's counter advances by its ``power_w`` over real time
    (``time.perf_counter``), so a counter and a sampled power trace can be compared; with
    ``profiles`` power and counter follow those square waves. ``instant_supported`` /
    ``usage_supported`` / ``counter`` can be switched off mid-run to act out
    NVML_ERROR_NOT_SUPPORTED.
    """

    NVMLError = FakeNVMLError
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(
        self,
        uuids: list[str],
        energy_mj: list[int] | None = None,
        counter: bool = True,
        power_w: list[float] | None = None,
        live: bool = False,
        profiles: list[SquareWave] | None = None,
    ) -> None:
        self.uuids = uuids
        self.energy_mj = list(energy_mj or [0] * len(uuids))
        self.counter = counter
        self.power_w = list(power_w or [100.0] * len(uuids))
        self.live = live
        self.profiles = profiles
        self.instant_supported = True
        self.usage_supported = True
        self.reads = 0
        self.field_reads = 0
        self.shutdown = False
        #: every counter read: device index → [(instant, value in mJ)]
        self.counter_log: dict[int, list[tuple[float, int]]] = {}
        self.log_path: Path | None = None
        self._acc = [float(e) for e in self.energy_mj]
        self._t = time.perf_counter()
        #: live power of each device over time: [(from instant, watts)]
        self.power_log = [[(self._t, float(p))] for p in self.power_w]
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()

    def _advance(self) -> float:
        if self.profiles is not None:
            now = time.perf_counter()
            self.energy_mj = [int(p.energy_j(now) * 1000.0) for p in self.profiles]
            return now
        if not self.live:
            return time.perf_counter()
        with self._lock:
            return self._accumulate()

    def _accumulate(self) -> float:
        """Add each device's power since the last step to its counter (under the lock)."""
        now = time.perf_counter()
        for i, p in enumerate(self.power_w):
            self._acc[i] += p * (now - self._t) * 1000.0
            self.energy_mj[i] = int(self._acc[i])
        self._t = now
        return now

    def _power(self, index: int) -> float:
        if self.profiles is not None:
            return self.profiles[index].power_w(time.perf_counter())
        return self.power_w[index]

    def set_power(self, device: int, watts: float) -> None:
        with self._lock:
            now = self._accumulate()
            self.power_w[device] = watts
            self.power_log[device].append((now, watts))

    def live_energy_j(self, device: int, a: float, b: float) -> float:
        """A live device's exact energy over ``[a, b]`` from the power it was set to."""
        steps = self.power_log[device]
        total = 0.0
        for (t0, watts), (t1, _) in zip(steps, [*steps[1:], (math.inf, 0.0)], strict=True):
            total += watts * max(0.0, min(b, t1) - max(a, t0))
        return total

    def window_j(self, device: int, energy_j: float, start: float, end: float) -> float:
        """The exact energy a live device used between the two counter reads behind ``energy_j``.

        The reads are found in the counter log (:func:`read_pair`); they must lie within
        :data:`EDGE_S` of the window's edges ``(start, end)``.
        """
        t_a, t_b = read_pair(self.counter_log[device], round(energy_j * 1000), start, end)
        assert abs(t_a - start) <= EDGE_S and abs(t_b - end) <= EDGE_S, (t_a, t_b, start, end)
        return self.live_energy_j(device, t_a, t_b)

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        return SimpleNamespace(index=i)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        return SimpleNamespace(index=self.uuids.index(uuid))

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self.uuids[handle.index]

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return "Fake H100"

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return 700_000

    def nvmlSystemGetDriverVersion(self) -> str:
        return "999.1"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self.counter:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        with self._log_lock:  # a read and its log entry together (sampler and caller race)
            now = self._advance()
            value = self.energy_mj[handle.index]
            self.reads += 1
            self.counter_log.setdefault(handle.index, []).append((now, value))
            if self.log_path is not None:
                with self.log_path.open("a") as f:
                    f.write(f"{now!r} {handle.index} {value}\n")
        return value

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> list[Any]:
        self.field_reads += 1
        assert field_ids == [self.NVML_FI_DEV_POWER_INSTANT]
        ok = self.instant_supported
        return [
            SimpleNamespace(
                fieldId=field_ids[0],
                nvmlReturn=self.NVML_SUCCESS if ok else self.NVML_ERROR_NOT_SUPPORTED,
                valueType=1,  # unsigned int, mW
                value=SimpleNamespace(uiVal=int(self._power(handle.index) * 1000) if ok else 0),
            )
        ]

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if not self.usage_supported:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return int(self._power(handle.index) * 1000)

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        return 1980

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return SimpleNamespace(used=2 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return 41


#: The environment variable tests/fake_pynvml/pynvml.py builds its FakeNvml from.
FAKE_NVML_ENV = "JOULEBENCH_FAKE_NVML"
FAKE_PYNVML_DIR = Path(__file__).resolve().parent / "fake_pynvml"


def fake_nvml_env(profiles: list[SquareWave], log: Path | None = None) -> dict[str, str]:
    """Environment for a subprocess whose ``import pynvml`` finds live fake GPUs.

    With ``log``, every counter read of every such process is appended there
    (:func:`counter_reads` reads it back).
    """
    path = os.pathsep.join(p for p in (str(FAKE_PYNVML_DIR), os.environ.get("PYTHONPATH")) if p)
    spec: dict[str, Any] = {"uuids": [f"GPU-fake-{i}" for i in range(len(profiles))]}
    spec["profiles"] = [p.to_list() for p in profiles]
    spec["log"] = str(log) if log else None
    return {"PYTHONPATH": path, FAKE_NVML_ENV: json.dumps(spec)}


def nvml_from_env() -> FakeNvml:
    spec = json.loads(os.environ[FAKE_NVML_ENV])
    nvml = FakeNvml(spec["uuids"], profiles=[SquareWave(*p) for p in spec["profiles"]])
    nvml.log_path = Path(spec["log"]) if spec.get("log") else None
    return nvml


def counter_reads(log: Path, index: int) -> list[tuple[float, int]]:
    """The (instant, mJ) counter reads of GPU ``index`` that subprocesses logged to ``log``."""
    reads = []
    for line in log.read_text().splitlines():
        t, i, v = line.split()
        if int(i) == index:
            reads.append((float(t), int(v)))
    return sorted(reads)


def write_domain(root: Path, name: str, label: str, energy_uj: int = 0) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(label + "\n")
    (d / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    write_counter(d, energy_uj)
    return d


def write_counter(domain: Path, energy_uj: int) -> None:
    """Replace ``energy_uj`` at once (a reader never sees it half-written)."""
    tmp = domain / "energy_uj.tmp"
    tmp.write_text(f"{energy_uj % MAX_UJ}\n")
    os.replace(tmp, domain / "energy_uj")


class LivePowercap:
    """A powercap tree (package + DRAM) whose counters follow square waves while it runs."""

    def __init__(
        self, root: Path, package: SquareWave, dram: SquareWave, every_s: float = 0.002
    ) -> None:
        self.root = root
        self.profiles = {"rapl:package-0": package, "rapl:dram-0": dram}
        self.every_s = every_s
        self.dirs = {
            "rapl:package-0": write_domain(root, "intel-rapl:0", "package-0"),
            "rapl:dram-0": write_domain(root, "intel-rapl:0:0", "dram"),
        }
        # the cores: part of the package, never to be summed with it. Its counter runs too (a
        # square wave of its own), so a meter that added it would be off by its energy
        self.core = SquareWave(10.0, 15.0, 0.4)
        self.core_dir = write_domain(root, "intel-rapl:0:1", "core")
        self.max_gap_s = 0.0
        #: every value written: domain key → [(instant it stands for, µJ)]
        self.writes: dict[str, list[tuple[float, int]]] = {key: [] for key in self.dirs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-powercap", daemon=True)
        self._write()

    def _write(self) -> float:
        now = time.perf_counter()
        for key, d in self.dirs.items():
            value = int(self.profiles[key].energy_j(now) * 1e6)
            self.writes[key].append((now, value))  # logged first: any value read is logged
            write_counter(d, value)
        write_counter(self.core_dir, int(self.core.energy_j(now) * 1e6))
        return now

    def _run(self) -> None:
        last = self._write()
        while not self._stop.wait(self.every_s):
            now = self._write()
            self.max_gap_s = max(self.max_gap_s, now - last)
            last = now

    def window_j(self, energy_by_device: dict[str, float], start: float, end: float) -> float:
        """The exact energy over the written instants a window's per-domain figures stand for.

        Each domain's figure must be the difference of two values this tree wrote (µJ), whose
        instants lie within :data:`EDGE_S` of the window's edges.
        """
        total = 0.0
        for key, profile in self.profiles.items():
            delta = round(energy_by_device[key] * 1e6)
            t_a, t_b = read_pair(self.writes[key], delta, start, end)
            assert abs(t_a - start) <= EDGE_S and abs(t_b - end) <= EDGE_S, (t_a, t_b, start, end)
            exact = profile.between(t_a, t_b)
            assert abs(energy_by_device[key] - exact) <= 2e-6, (key, energy_by_device[key], exact)
            total += exact
        return total

    def between(self, a: float, b: float) -> float:
        """The tree's exact energy over ``[a, b]``, every domain summed."""
        return sum(p.between(a, b) for p in self.profiles.values())

    @property
    def high_w(self) -> float:
        return sum(p.high_w for p in self.profiles.values())

    def __enter__(self) -> LivePowercap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
