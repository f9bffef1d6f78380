"""RAPL: CPU package and DRAM energy counters from the Linux powercap interface.

Each domain directory (``/sys/class/powercap/intel-rapl:0`` = package 0,
``intel-rapl:0:2`` named ``dram`` = its DRAM, on AMD Zen the same interface) holds
``energy_uj``, a counter in µJ that wraps to 0 after ``max_energy_range_uj``. Every read is
unwrapped against the previous one (a wrap adds the range), so a window is correct as long as
the counter is read at least once per wrap period — minutes even at hundreds of watts, and the
background sampler reads it many times a second.

Since Linux 5.10 (CVE-2020-8694) ``energy_uj`` is readable by root only; an unreadable counter
is a :class:`MeterError` that says what to grant. No RAPL at all is a null meter with no
domains.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joulebench.core.errors import MeterError
from joulebench.energy.base import Clock, Measurement, Windows
from joulebench.energy.sampler import Sampler
from joulebench.energy.trace import PowerTrace

DEFAULT_ROOT = "/sys/class/powercap"
_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


def permission_hint(path: Path, root: Path) -> str:
    return (
        f"cannot read {path}: permission denied. RAPL energy counters are readable by root only "
        "since Linux 5.10 (CVE-2020-8694). Grant the user running joulebench read access, e.g. "
        f"`sudo chmod a+r {root}/intel-rapl:*/energy_uj` (until reboot; a udev rule or "
        "`setfacl -m u:$USER:r` makes it last), run as root, or use meter 'estimate'"
    )


@dataclass
class RaplDomain:
    """One counter (a package or its DRAM), read as unwrapped joules since the first read."""

    key: str
    path: Path
    max_uj: int
    root: Path
    _last_raw: int | None = None
    _total_uj: int = 0
    wraps: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _read(self, name: str) -> int:
        target = self.path / name
        try:
            return int(target.read_text().strip())
        except PermissionError:
            raise MeterError(permission_hint(target, self.root)) from None
        except (OSError, ValueError) as err:
            raise MeterError(f"cannot read RAPL counter {target}: {err}") from err

    def read_j(self) -> float:
        """Energy in J since the first read, with wraparounds added back."""
        with self._lock:  # read under the lock too: an older reading after a newer is no wrap
            raw = self._read("energy_uj")
            if self._last_raw is not None:
                delta = raw - self._last_raw
                if delta < 0:  # the counter wrapped past max_energy_range_uj
                    delta += self.max_uj
                    self.wraps += 1
                self._total_uj += delta
            self._last_raw = raw
            return self._total_uj / 1e6


def discover(root: str | Path = DEFAULT_ROOT) -> list[RaplDomain]:
    """The package and DRAM domains under ``root`` (none where there is no RAPL)."""
    root = Path(root)
    found: dict[Path, RaplDomain] = {}
    for d in sorted(root.glob("intel-rapl:*")):
        m = _DIR.match(d.name)
        name_file = d / "name"
        if not m or not name_file.is_file():
            continue
        name = name_file.read_text().strip()
        if name.startswith("package"):
            key = f"rapl:{name}"
        elif name == "dram":
            key = f"rapl:dram-{m.group(1)}"
        else:  # core, uncore, psys: parts of a package or the platform; not summed
            continue
        domain = RaplDomain(key, d, 0, root)
        domain.max_uj = domain._read("max_energy_range_uj")
        found.setdefault(d.resolve(), domain)
    return sorted(found.values(), key=lambda dom: dom.key)


def readable(root: str | Path = DEFAULT_ROOT) -> bool:
    """Whether RAPL exists under ``root`` and this user can read it."""
    try:
        domains = discover(root)
        for domain in domains:
            domain.read_j()
    except MeterError:
        return False
    return bool(domains)


class RaplMeter:
    """CPU package + DRAM energy from RAPL counters; with no domains it is a null meter."""

    source = "rapl"

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        sample_hz: float = 0.0,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.root = Path(root)
        self.domains = discover(self.root)
        for domain in self.domains:
            domain.read_j()  # an unreadable counter fails here, before any measurement
        self._windows = Windows(clock)
        self._last: dict[str, tuple[float, float]] = {}
        self._sampler = None
        if sample_hz and self.domains:
            self._sampler = Sampler(self._sample, sample_hz, "rapl-sampler", clock)
            self._sampler.start()

    @classmethod
    def require(
        cls,
        root: str | Path = DEFAULT_ROOT,
        sample_hz: float = 0.0,
        clock: Clock = time.perf_counter,
    ) -> RaplMeter:
        """A RAPL meter that has at least one domain, else a clear error."""
        meter = cls(root, sample_hz, clock)
        if not meter.domains:
            raise MeterError(
                f"meter 'rapl': no intel-rapl package or dram domain under {root} (this machine "
                "has no RAPL, or powercap is not mounted here); use meter 'estimate'"
            )
        return meter

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def _read(self) -> dict[str, float]:
        return {d.key: d.read_j() for d in self.domains}

    def _sample(self, t: float) -> list[dict[str, Any]]:
        rows = []
        for key, joules in self._read().items():
            prev = self._last.get(key)
            power = (joules - prev[1]) / (t - prev[0]) if prev and t > prev[0] else None
            self._last[key] = (t, joules)
            rows.append(
                {
                    "device": key,
                    "source": self.source,
                    "power_w": power,
                    "power_field": "energy_uj delta",
                    "interpolation": "interval",
                    "energy_counter_j": joules,
                }
            )
        return rows

    def begin_window(self, key: str) -> None:
        if self._sampler:
            self._sampler.sample_now()
        self._windows.begin(key, self._read())

    def end_window(self, key: str) -> Measurement:
        now = self._read()
        start_t, end_t, start = self._windows.end(key)
        if self._sampler:
            self._sampler.sample_now()
        energy = {k: now[k] - start[k] for k in now}
        return Measurement(
            end_t - start_t, energy, self.source, dict.fromkeys(energy, self.source), start_t, end_t
        )

    def cancel_window(self, key: str) -> None:
        self._windows.cancel(key)

    def trace(self) -> PowerTrace:
        return self._sampler.trace() if self._sampler else PowerTrace.empty()

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": "RAPL energy counter delta (powercap energy_uj, wraparound handled)",
            "root": str(self.root),
            "domains": {
                d.key: {"path": str(d.path), "max_energy_range_uj": d.max_uj, "wraps": d.wraps}
                for d in self.domains
            },
            "sources": {d.key: self.source for d in self.domains},
            "power_fields": (
                {d.key: "energy_uj delta" for d in self.domains} if self._sampler else {}
            ),
            **(self._sampler.describe() if self._sampler else {"sample_hz": 0}),
        }

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()

    def __enter__(self) -> RaplMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DEFAULT_ROOT", "RaplDomain", "RaplMeter", "discover", "readable"]
