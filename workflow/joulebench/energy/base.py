"""What every meter shares: the typed measurement of a window, the protocol, window bookkeeping.

A window is named (``begin_window(key)`` / ``end_window(key)``); several may be open at once; a
duplicate or unknown key is an error naming the key, and ``cancel_window(key)`` closes one whose
reading is not wanted (a load that failed). Window edges and every trace sample are on one
clock, ``time.perf_counter`` (CLOCK_MONOTONIC on Linux: the same in every process of the host),
injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from joulebench.core.errors import MeterError
from joulebench.energy.trace import PowerTrace

#: The clock of window edges and trace samples (seconds, monotonic).
Clock = Callable[[], float]


@dataclass(frozen=True)
class Measurement:
    """Energy and time of one window, per device, with the meter that produced each figure.

    ``sources`` maps each device to how its energy was obtained (``nvml``, ``nvml-trace``,
    ``rapl``, ``estimate``); ``start_s``/``end_s`` are the window edges on the meters' clock
    (``time.perf_counter``), the clock of every power trace.
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
    """What the harness and the serving session need from a meter."""

    source: str

    def begin_window(self, key: str) -> None: ...
    def end_window(self, key: str) -> Measurement: ...
    def cancel_window(self, key: str) -> None: ...
    def trace(self) -> PowerTrace: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass
class Windows:
    """Bookkeeping of open windows, shared by every meter: duplicate or unknown keys are errors."""

    clock: Clock = time.perf_counter
    open: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def begin(self, key: str, reading: Any) -> None:
        if key in self.open:
            raise MeterError(f"measurement window '{key}' is already open")
        self.open[key] = (self.clock(), reading)

    def end(self, key: str) -> tuple[float, float, Any]:
        """(start, end, reading at start) of the window ``key``, which is closed."""
        try:
            start, reading = self.open.pop(key)
        except KeyError:
            raise MeterError(f"measurement window '{key}' was never opened") from None
        return start, self.clock(), reading

    def cancel(self, key: str) -> None:
        """Close ``key`` without a reading (an unknown key is an error, as for ``end``)."""
        self.end(key)


def idle_baseline(
    meter: Meter, seconds: float, key: str = "idle", sleep: Callable[[float], None] | None = None
) -> Measurement | None:
    """Energy of ``seconds`` of doing nothing on ``meter`` (None when ``seconds`` is 0)."""
    if seconds <= 0:
        return None
    meter.begin_window(key)
    (sleep or time.sleep)(seconds)
    return meter.end_window(key)
