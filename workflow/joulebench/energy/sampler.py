"""A background thread that samples a sensor at a fixed rate into a power trace.

The sampler knows nothing about hardware: a meter hands it ``read(t)``, which returns one trace
row per device for time ``t`` (``time.perf_counter`` unless a clock is injected: the clock the
windows use). It is the only thing in joulebench that samples power. Ticks are kept
on an absolute schedule (no drift); a tick that comes late is taken once, not caught up. Every
grid point from start to the moment stop is asked is either sampled (``ticks``) or counted as
missed (``late_ticks``), whatever the load; none after it is sampled. A
sensor error ends the thread and is raised, with its cause, to whoever asks for the trace next:
it is never swallowed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from joulebench.core.errors import MeterError
from joulebench.energy.trace import PowerTrace, frame

Reader = Callable[[float], list[dict[str, Any]]]


class Sampler:
    """Sample ``read`` every ``1/hz`` seconds on a daemon thread between start() and stop()."""

    def __init__(
        self,
        read: Reader,
        hz: float,
        name: str = "sampler",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 0 < hz <= 1000:
            raise MeterError(f"sample rate must be in (0, 1000] Hz, got {hz}")
        self.hz = float(hz)
        self.name = name
        self.clock = clock
        self._read = read
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.ticks = 0
        self.late_ticks = 0
        self.started_s = math.nan
        self.stopped_s = math.nan
        self.thread_cpu_s = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise MeterError(f"{self.name} was already started")
        self.started_s = self.clock()
        self.sample_now()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def sample_now(self) -> None:
        """Take one sample on the calling thread (e.g. at a window edge)."""
        with self._lock:
            t = self.clock()
            rows = self._read(t)
            for row in rows:
                row["t_s"] = t
            self._rows.extend(rows)

    def _loop(self) -> None:
        period = 1.0 / self.hz
        next_t = self.started_s + period
        try:
            while not self._stop.wait(max(0.0, next_t - self.clock())):
                if self._stop.is_set() and next_t > self.stopped_s:
                    break  # woke for a grid point after stop was asked: not part of the run
                self.sample_now()
                self.ticks += 1
                next_t += period
                now = self.stopped_s if self._stop.is_set() else self.clock()
                if now >= next_t:  # fell behind: skip the missed ticks, keep the grid
                    missed = int((now - next_t) / period) + 1
                    self.late_ticks += missed
                    next_t += missed * period
            if next_t <= self.stopped_s:  # points before stop the thread never woke for
                self.late_ticks += int((self.stopped_s - next_t) / period) + 1
        except BaseException as err:  # handed to the main thread, see _check
            self._error = err
        finally:
            self.thread_cpu_s = time.thread_time()

    def _check(self) -> None:
        if self._error is not None:
            raise MeterError(f"{self.name} failed while sampling: {self._error!r}") from self._error

    def stop(self) -> None:
        """Stop the thread (taking one last sample) and raise any error it met."""
        if self._thread is not None:
            self.stopped_s = self.clock()  # the grid ends when stop is asked, not when joined
            self._stop.set()
            self._thread.join()
        self._check()
        if self._thread is not None and self._rows:
            self.sample_now()
        self._thread = None

    def trace(self) -> PowerTrace:
        """Every sample so far (a fresh one is taken first, so the trace reaches 'now')."""
        self._check()
        if self.running:
            self.sample_now()
        with self._lock:
            rows = list(self._rows)
        return PowerTrace(frame(rows).sort("device", "t_s"))

    def cpu_seconds(self) -> float:
        """CPU time the sampling thread has used (its own cost, measured, not estimated)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and thread.ident is not None:
            try:
                return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, AttributeError):
                return self.thread_cpu_s
        return self.thread_cpu_s

    def describe(self) -> dict[str, Any]:
        return {
            "sample_hz": self.hz,
            "samples": self.ticks,
            "late_ticks": self.late_ticks,
            "sampler_thread_cpu_s": round(self.cpu_seconds(), 4),
        }
