"""The load generator: one asyncio event loop, streaming HTTP, no thread per request.

Each request is released at its scheduled time (arrival process → shaping policy), sent as a
streaming request, and timed at every step: arrival, release, sent, first token, each token, end.
Nothing is dropped: a request that fails or times out is kept with its status and error.
With a ``Watchdog``, a load whose server dies or stops answering is stopped: requests in flight
are abandoned (failed), those not yet due are kept as ``not_sent``, and ``LoadAborted`` carries
every result, so each planned request is accounted exactly once.

Keeping time: each request's task is created ``LEAD_S`` before its release and waits for the
instant itself: a timer sleep until ``SPIN_S`` before it, then yielding to the event loop (streams
in flight keep being read), then the last ``BUSY_S`` without yielding, so no other callback can
start in between. The "sent" time is then taken and the request written in the same step.
Automatic garbage collection is paused during an open-loop load and run in the gaps between
sends instead (see ``GcInGaps``), so no collection pause lands on a send instant. The send lag
stays well under a millisecond (see tests/perf/loadgen_precision.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import polars as pl
from yarl import URL

from joulebench.core.errors import JoulebenchError

log = logging.getLogger(__name__)

#: ``short``: answered in full, but with fewer tokens than asked (an early EOS, a server that
#: ignores the length control): not counted as completed work.
STATUSES = ("ok", "short", "error", "timeout", "not_sent")


@dataclass
class Request:
    """One request to send: what, and when (offsets in seconds from the load start)."""

    index: int
    prompt: str
    input_len: int
    output_len: int
    arrival_s: float = math.nan  # when the user's request arrives (nan: closed loop, set later)
    release_s: float = math.nan  # when the shaper lets it go (= arrival for pass-through)
    body: bytes = b""  # the encoded request body, made before the load so sends stay cheap


@dataclass
class Result:
    """What happened to one request; times are offsets in seconds from the load start."""

    index: int
    input_len: int
    output_len_asked: int
    arrival_s: float
    release_s: float
    sent_s: float = math.nan
    first_token_s: float = math.nan
    end_s: float = math.nan
    token_times_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    status: str = "ok"
    error: str | None = None
    http_status: int | None = None


# ---------------------------------------------------------------- client protocols


@dataclass(frozen=True)
class Event:
    """One parsed stream event: new tokens it carries, the server's final count, an error."""

    tokens: int = 0
    final_tokens: int | None = None
    done: bool = False
    error: str | None = None


class OpenAICompletions:
    """OpenAI-compatible ``/v1/completions`` with ``stream: true`` (vLLM, transformers serve)."""

    name = "openai"
    path = "/v1/completions"

    def body(self, model: str, req: Request, control: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": req.prompt,
            "max_tokens": req.output_len,
            "temperature": 0.0,
            "stream": True,
        }
        n = req.output_len
        if control == "min_tokens":  # vLLM's extensions: exactly n tokens
            body |= {"min_tokens": n, "ignore_eos": True, "stream_options": {"include_usage": True}}
        elif control == "generation_config":  # transformers serve: a whole GenerationConfig
            config = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
            body["generation_config"] = json.dumps(config)
        return body

    def parse(self, data: str) -> Event:
        if data == "[DONE]":
            return Event(done=True)
        payload = json.loads(data)
        if "error" in payload:
            return Event(error=str(payload["error"]), done=True)
        tokens = sum(1 for c in payload.get("choices") or [] if c.get("text"))
        usage = payload.get("usage") or {}
        return Event(tokens=tokens, final_tokens=usage.get("completion_tokens"))


class TgiGenerateStream:
    """Text Generation Inference ``/generate_stream``: one SSE event per token."""

    name = "tgi"
    path = "/generate_stream"

    def body(self, model: str, req: Request, control: str) -> dict[str, Any]:
        # TGI has no minimum length: a model may stop early at EOS; tokens are counted as sent
        params = {"max_new_tokens": req.output_len, "do_sample": False, "details": True}
        return {"inputs": req.prompt, "parameters": params}

    def parse(self, data: str) -> Event:
        payload = json.loads(data)
        if "error" in payload:
            return Event(error=str(payload["error"]), done=True)
        tokens = 1 if payload.get("token") else 0
        details = payload.get("details") or {}
        done = payload.get("generated_text") is not None
        return Event(tokens=tokens, final_tokens=details.get("generated_tokens"), done=done)


PROTOCOLS: dict[str, Callable[[], OpenAICompletions | TgiGenerateStream]] = {
    "openai": OpenAICompletions,
    "tgi": TgiGenerateStream,
}


@dataclass(frozen=True)
class Target:
    """Where and how to send: base URL, protocol, model name, how output length is fixed.

    ``output_control``: ``min_tokens`` (vLLM: min_tokens + ignore_eos), ``generation_config``
    (transformers serve: min_new_tokens), or ``none`` (max length only).
    """

    url: str
    protocol: str = "openai"
    model: str = ""
    output_control: str = "none"


# ---------------------------------------------------------------- a dead or hung server


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


def outcome_counts(results: Sequence[Result]) -> dict[str, int]:
    """Requests completed, failed (errors and timeouts), not sent, and planned (their sum)."""
    by_status = {s: 0 for s in STATUSES}
    for r in results:
        by_status[r.status] += 1
    return {
        "completed": by_status["ok"],
        "short": by_status["short"],
        "failed": by_status["error"] + by_status["timeout"],
        "timed_out": by_status["timeout"],
        "not_sent": by_status["not_sent"],
        "planned": len(results),
    }


def describe_counts(results: Sequence[Result]) -> str:
    c = outcome_counts(results)
    short = f"{c['short']} short of the tokens asked, " if c["short"] else ""
    return (
        f"{c['completed']} completed, {short}{c['failed']} failed ({c['timed_out']} timed out), "
        f"{c['not_sent']} not sent, of {c['planned']} planned"
    )


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


def not_sent(req: Request, reason: str) -> Result:
    return Result(
        req.index,
        req.input_len,
        req.output_len,
        req.arrival_s,
        req.release_s,
        status="not_sent",
        error=f"not sent: {reason}",
    )


# ---------------------------------------------------------------- sending

JSON = {"Content-Type": "application/json"}


def encode_body(target: Target, req: Request) -> bytes:
    """The request's JSON body as bytes, in the target's protocol."""
    proto = PROTOCOLS[target.protocol]()
    return json.dumps(proto.body(target.model, req, target.output_control)).encode()


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


def endpoint(target: Target) -> URL:
    """The URL requests go to, parsed once."""
    return URL(target.url.rstrip("/") + PROTOCOLS[target.protocol].path)


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
                if not await _sleep_until_or_abort(due - LEAD_S, abort):
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


async def _sleep_until_or_abort(until: float, abort: Abort, check_s: float = 0.25) -> bool:
    """Sleep until ``until`` (perf_counter); False as soon as the load is aborted."""
    while abort.reason is None:
        remaining = until - time.perf_counter()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, check_s))
    return False


def _finish(
    results: list[Result], unsent: Sequence[Request], abort: Abort, t0: float
) -> tuple[list[Result], float]:
    """Sorted results; with the load aborted, the unsent requests too, in LoadAborted."""
    if abort.reason is None:
        return sorted(results, key=lambda r: r.index), t0
    results += [not_sent(req, abort.reason) for req in unsent]
    raise LoadAborted(abort.reason, sorted(results, key=lambda r: r.index), t0)


# ---------------------------------------------------------------- metrics


def results_table(results: Sequence[Result]) -> pl.DataFrame:
    """One row per request: raw timestamps plus TTFT, ITL, TPOT, e2e (errors kept)."""
    rows = []
    for r in results:
        times = np.asarray(r.token_times_s, dtype=float)
        itl = np.diff(times) if times.size > 1 else np.empty(0)
        decode_tokens = r.output_tokens - 1
        tpot = (
            (times[-1] - times[0]) / decode_tokens
            if times.size > 1 and decode_tokens > 0
            else math.nan
        )
        rows.append(
            {
                "request": r.index,
                "status": r.status,
                "error": r.error,
                "http_status": r.http_status,
                "input_tokens": r.input_len,
                "output_tokens_asked": r.output_len_asked,
                "output_tokens": r.output_tokens,
                "arrival_s": r.arrival_s,
                "release_s": r.release_s,
                "sent_s": r.sent_s,
                "first_token_s": r.first_token_s,
                "end_s": r.end_s,
                "hold_s": r.release_s - r.arrival_s,
                "send_lag_s": r.sent_s - r.release_s,
                "ttft_s": r.first_token_s - r.arrival_s,
                "server_ttft_s": r.first_token_s - r.sent_s,
                "e2e_s": r.end_s - r.arrival_s,
                "tpot_s": tpot,
                "itl_mean_s": float(itl.mean()) if itl.size else math.nan,
                "token_times_s": r.token_times_s,
            }
        )
    schema_overrides = {"error": pl.String, "http_status": pl.Int64}
    return pl.DataFrame(rows, schema_overrides=schema_overrides, infer_schema_length=None)


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
