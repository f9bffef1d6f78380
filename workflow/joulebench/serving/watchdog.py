"""A dead or hung server: how a load notices it and stops, every request accounted once.

The ``Watchdog`` says how to tell that the server is gone (its process's exit, its health URL);
``Abort`` is shared by the dispatcher, the senders and the watcher (``watch``): once the load is
stopped, requests in flight are abandoned (failed) and those not yet due are kept as
``not_sent``; ``LoadAborted`` carries every result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from joulebench.core.errors import JoulebenchError
from joulebench.serving.request import Result, describe_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watchdog:
    """How the load generator notices that its server died or hangs, and stops sending.

    ``exited()`` says why the server process is gone (None while it runs); it is called every
    ``interval_s`` and whenever a request times out or loses its connection. After such a
    failure, with the process running, ``health_url`` (if any) is probed: no answer within
    ``probe_timeout_s`` means the server stopped answering.
    """

    exited: Callable[[], str | None] = lambda: None
    health_url: str | None = None
    interval_s: float = 0.25
    probe_timeout_s: float = 5.0


class LoadAborted(JoulebenchError):
    """The watchdog stopped a load; ``results`` holds every planned request, each accounted."""

    def __init__(self, reason: str, results: list[Result], t0: float) -> None:
        self.reason, self.results, self.t0 = reason, results, t0
        super().__init__(f"load stopped: {reason}; requests: {describe_counts(results)}")


class Abort:
    """Shared by the dispatcher, the senders and the watchdog: why the load stopped, if it did."""

    def __init__(self, watchdog: Watchdog | None = None) -> None:
        self.watchdog = watchdog
        self.reason: str | None = None
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.suspect: str | None = None  # a request's failure that calls for a health probe
        self.check_now = asyncio.Event()

    def stop(self, reason: str) -> None:
        """Stop sending and abandon the requests in flight."""
        if self.reason is None:
            self.reason = reason
            log.error("stopping the load: %s", reason)
            current = asyncio.current_task()  # a sender that noticed: it ends by itself
            for task in self.in_flight:
                if task is not current:
                    task.cancel()

    def request_failed(self, how: str) -> None:
        """A request timed out or lost its connection: check the server process at once.

        At once, so nothing more is sent to a dead server; if the process runs, the watchdog
        probes its health.
        """
        if self.watchdog is None or self.reason is not None:
            return
        exited = self.watchdog.exited()
        if exited is not None:
            self.stop(exited)
        else:
            self.suspect = how
            self.check_now.set()


async def watch(session: aiohttp.ClientSession, abort: Abort) -> None:
    """Until cancelled: stop the load when the server exits or stops answering."""
    watchdog = abort.watchdog
    assert watchdog is not None
    while abort.reason is None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(watchdog.interval_s):
                await abort.check_now.wait()
        abort.check_now.clear()
        reason = watchdog.exited()
        if reason is None and abort.suspect is not None:
            suspect, abort.suspect = abort.suspect, None
            unhealthy = await probe_health(session, watchdog)
            if unhealthy is not None:  # the process may have died meanwhile: the better reason
                reason = (
                    watchdog.exited() or f"the server stopped answering: {suspect} and {unhealthy}"
                )
        if reason is not None:
            abort.stop(reason)


async def probe_health(session: aiohttp.ClientSession, watchdog: Watchdog) -> str | None:
    """None if the health URL answers 200 in time (or there is none), else what went wrong."""
    if not watchdog.health_url:
        return None
    url, limit = watchdog.health_url, watchdog.probe_timeout_s
    try:
        async with asyncio.timeout(limit), session.get(url) as resp:
            if resp.status == 200:
                return None
            problem = f"HTTP {resp.status}"
    except TimeoutError:
        problem = f"no answer in {limit:g} s"
    except (aiohttp.ClientError, OSError) as err:
        problem = f"{type(err).__name__}: {err}"
    return f"{url} gave {problem}"
