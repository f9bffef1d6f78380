"""Keeping time in the load generator: each request sent at its instant, no pause landing on it.

Each request's task is created ``LEAD_S`` before its release and waits for the instant itself
(``sleep_until``): a timer sleep until ``SPIN_S`` before it, then yielding to the event loop
(streams in flight keep being read), then the last ``BUSY_S`` without yielding, so no other
callback can start in between. The "sent" time is then taken and the request written in the same
step. Automatic garbage collection is paused during an open-loop load and run in the gaps between
sends instead (``GcInGaps``), so no collection pause lands on a send instant. The send lag stays
well under a millisecond (see tests/perf/loadgen_precision.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator

from joulebench.serving.watchdog import Abort

#: How long before its release a request's task is created (it then waits for the instant).
LEAD_S = 0.004
#: Timer sleep until this long before an instant, then yield to the event loop.
SPIN_S = 0.002
#: The last stretch before an instant is waited without yielding, so no callback can start.
BUSY_S = 0.0003


async def sleep_until(deadline: float, spin_s: float = SPIN_S, busy_s: float = BUSY_S) -> None:
    """Wait until ``deadline`` (perf_counter): sleep, then yield, the last ``busy_s`` busy."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= busy_s:
            break
        await asyncio.sleep(remaining - spin_s if remaining > spin_s else 0)
    while time.perf_counter() < deadline:
        pass


async def sleep_until_or_abort(until: float, abort: Abort, check_s: float = 0.25) -> bool:
    """Sleep until ``until`` (perf_counter); False as soon as the load is aborted."""
    while abort.reason is None:
        remaining = until - time.perf_counter()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, check_s))
    return False


class GcInGaps:
    """Automatic garbage collection off during a load, run by the dispatcher in gaps instead.

    A collection can pause the event loop for a millisecond or more, so it must not start on its
    own just before a send. The dispatcher calls ``collect`` in a quiet moment (after a send,
    with the next one at least ``gap_s`` away) once garbage is ``due``; the oldest generation
    only in gaps of ``full_gap_s``. Past ``overdue`` allocations it collects whatever the
    schedule, so a load without gaps still frees its memory.
    """

    #: After a send instant, this long is left for the request to be written before collecting.
    after_send_s = 0.001

    def __init__(self, gap_s: float = 0.002, full_gap_s: float = 0.02, overdue: int = 50_000):
        self.gap_s = gap_s
        self.full_gap_s = full_gap_s
        self.overdue = overdue
        self.thresholds = tuple(t or 1 for t in gc.get_threshold())
        self.collections = [0, 0, 0]

    @contextlib.contextmanager
    def paused(self) -> Iterator[GcInGaps]:
        was_enabled = gc.isenabled()
        ours = gc.get_freeze_count() == 0  # a caller's own freeze is left as it is
        if ours:
            gc.collect()
            gc.freeze()  # what exists before the load is never scanned during it
        gc.disable()
        try:
            yield self
        finally:
            if ours:
                gc.unfreeze()
            if was_enabled:
                gc.enable()

    def due(self) -> bool:
        return gc.get_count()[0] >= self.thresholds[0]

    def fits(self, gap_s: float) -> bool:
        return gap_s >= self.gap_s or gc.get_count()[0] >= self.overdue

    def collect(self, gap_s: float) -> None:
        """One collection, of the generations automatic collection would have taken."""
        counts = gc.get_count()
        generation = 1 if counts[1] >= self.thresholds[1] else 0
        if generation and counts[2] >= self.thresholds[2] and gap_s >= self.full_gap_s:
            generation = 2
        gc.collect(generation)
        self.collections[generation] += 1
