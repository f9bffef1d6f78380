"""The load generator: one asyncio event loop, streaming HTTP, no thread per request.

Each request is released at its scheduled time (arrival process → shaping policy), sent as a
streaming request in the target's protocol (:mod:`~joulebench.serving.protocols`), and timed at
every step (:mod:`~joulebench.serving.request`). Open loop: every request is sent at its release
time, kept to well under a millisecond (:mod:`~joulebench.serving.pacing`); closed loop: N users,
each sending its next request when its last one ends. With a ``Watchdog``
(:mod:`~joulebench.serving.watchdog`), a load whose server dies or stops answering is stopped and
``LoadAborted`` carries every result, so each planned request is accounted exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from yarl import URL

from joulebench.serving.pacing import LEAD_S, GcInGaps, sleep_until, sleep_until_or_abort
from joulebench.serving.protocols import PROTOCOLS, Target, encode_body, endpoint
from joulebench.serving.request import Request, Result, not_sent
from joulebench.serving.watchdog import Abort, LoadAborted, Watchdog, watch

log = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json"}


async def send(
    session: aiohttp.ClientSession,
    target: Target,
    req: Request,
    t0: float,
    timeout_s: float,
    due: float | None = None,
    url: URL | None = None,
    abort: Abort | None = None,
) -> Result:
    """Send one streaming request (at ``due``, perf_counter, if given) and time it.

    Never raises for request-level failures: they are kept in the result. A request whose
    load is aborted before it is due is not sent; one in flight is abandoned (an error).
    """
    proto = PROTOCOLS[target.protocol]()
    res = Result(req.index, req.input_len, req.output_len, req.arrival_s, req.release_s)
    body = req.body or encode_body(target, req)
    url = url or endpoint(target)
    final: int | None = None
    done = False
    if due is not None:
        await sleep_until(due)
    if abort is not None:
        if abort.reason is not None:
            return not_sent(req, abort.reason)
        task = asyncio.current_task()
        assert task is not None
        abort.in_flight.add(task)
    res.sent_s = time.perf_counter() - t0  # taken right before the request is written
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, data=body, headers=JSON) as resp:
                res.http_status = resp.status
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    res.status, res.error = "error", f"HTTP {resp.status}: {text}"
                else:
                    async for raw in resp.content:
                        line = raw.strip()
                        if not line.startswith(b"data:") or done:
                            continue  # read to the end: the connection is then reused
                        now = time.perf_counter() - t0
                        event = proto.parse(line[5:].strip().decode())
                        if event.tokens:
                            res.token_times_s.extend([now] * event.tokens)
                        final = event.final_tokens if event.final_tokens is not None else final
                        if event.error:
                            res.status, res.error = "error", event.error
                        done = event.done
    except TimeoutError:
        res.status, res.error = "timeout", f"no complete answer within {timeout_s:g} s"
        if abort is not None:
            abort.request_failed("a request timed out")
    except asyncio.CancelledError:
        if abort is None or abort.reason is None:
            raise  # not ours: the whole load is being cancelled
        res.status, res.error = "error", f"abandoned in flight: {abort.reason}"
    except (aiohttp.ClientError, OSError, ValueError) as err:
        res.status, res.error = "error", f"{type(err).__name__}: {err}"
        if abort is not None and isinstance(err, aiohttp.ClientConnectionError | OSError):
            abort.request_failed(f"a request failed ({type(err).__name__})")
    except Exception as err:  # kept as the request's error, never lost: the run goes on
        log.warning("request %d failed unexpectedly: %r", req.index, err)
        res.status, res.error = "error", f"{type(err).__name__}: {err}"
    finally:
        if abort is not None:
            abort.in_flight.discard(asyncio.current_task())  # type: ignore[arg-type]
    res.end_s = time.perf_counter() - t0
    if res.token_times_s:
        res.first_token_s = res.token_times_s[0]
    res.output_tokens = final if final is not None else len(res.token_times_s)
    if res.status == "ok" and res.output_tokens == 0:
        res.status, res.error = "error", "the stream ended without a token"
    elif res.status == "ok" and res.output_tokens < req.output_len:
        res.status = "short"
        res.error = f"{res.output_tokens} of the {req.output_len} tokens asked"
    return res


def _session(concurrency_hint: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        read_bufsize=2**16,
    )


async def run_open(
    target: Target,
    requests: Sequence[Request],
    timeout_s: float,
    on_start: Callable[[float], None] | None = None,
    watchdog: Watchdog | None = None,
) -> tuple[list[Result], float]:
    """Send every request at its ``release_s``; returns the results and t0 (perf_counter)."""
    order = sorted(requests, key=lambda r: (r.release_s, r.index))
    for req in order:  # JSON encoding stays off the timed path
        req.body = req.body or encode_body(target, req)
    url = endpoint(target)
    gc_gaps = GcInGaps()
    abort = Abort(watchdog)
    async with _session(len(order)) as session, _watching(session, abort):
        with gc_gaps.paused():
            t0 = time.perf_counter() + 0.05  # a moment to finish setting up before the first
            await sleep_until(t0)
            if on_start:
                on_start(t0)
            tasks = []
            for i, req in enumerate(order):
                due = t0 + req.release_s
                # each task waits for its own instant: created early, it sends without a hop
                if not await sleep_until_or_abort(due - LEAD_S, abort):
                    break
                tasks.append(
                    asyncio.create_task(send(session, target, req, t0, timeout_s, due, url, abort))
                )
                if gc_gaps.due() and i + 1 < len(order):
                    quiet_from = due + gc_gaps.after_send_s
                    quiet_s = t0 + order[i + 1].release_s - LEAD_S - quiet_from
                    if gc_gaps.fits(quiet_s):
                        await asyncio.sleep(max(0.0, quiet_from - time.perf_counter()))
                        gc_gaps.collect(quiet_s)
            results = list(await asyncio.gather(*tasks))
    log.debug("open-loop load: garbage collections in gaps by generation %s", gc_gaps.collections)
    return _finish(results, order[len(tasks) :], abort, t0)


async def run_closed(
    target: Target,
    requests: Sequence[Request],
    users: int,
    timeout_s: float,
    on_start: Callable[[float], None] | None = None,
    watchdog: Watchdog | None = None,
) -> tuple[list[Result], float]:
    """``users`` concurrent users, each sending its next request when its last one ends."""
    queue = list(reversed(requests))
    results: list[Result] = []
    abort = Abort(watchdog)
    async with _session(users) as session, _watching(session, abort):
        t0 = time.perf_counter()
        if on_start:
            on_start(t0)

        async def user() -> None:
            while queue and abort.reason is None:
                req = queue.pop()
                req.arrival_s = req.release_s = time.perf_counter() - t0
                results.append(await send(session, target, req, t0, timeout_s, abort=abort))

        await asyncio.gather(*(user() for _ in range(users)))
    return _finish(results, queue, abort, t0)


@contextlib.asynccontextmanager
async def _watching(session: aiohttp.ClientSession, abort: Abort) -> AsyncIterator[None]:
    """Run the watchdog (if any) beside the load."""
    if abort.watchdog is None:
        yield
        return
    watcher = asyncio.create_task(watch(session, abort))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _finish(
    results: list[Result], unsent: Sequence[Request], abort: Abort, t0: float
) -> tuple[list[Result], float]:
    """Sorted results; with the load aborted, the unsent requests too, in LoadAborted."""
    if abort.reason is None:
        return sorted(results, key=lambda r: r.index), t0
    results += [not_sent(req, abort.reason) for req in unsent]
    raise LoadAborted(abort.reason, sorted(results, key=lambda r: r.index), t0)


def run(
    target: Target,
    requests: Sequence[Request],
    timeout_s: float,
    users: int | None = None,
    on_start: Callable[[float], None] | None = None,
    watchdog: Watchdog | None = None,
) -> tuple[list[Result], float]:
    """Run the load to completion on a fresh event loop (closed loop when ``users`` is set).

    Raises LoadAborted (with every result) if the ``watchdog`` stops the load.
    """
    if users:
        coro = run_closed(target, requests, users, timeout_s, on_start, watchdog)
    else:
        coro = run_open(target, requests, timeout_s, on_start, watchdog)
    return asyncio.run(coro)
