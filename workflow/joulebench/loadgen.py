"""The load generator: one asyncio event loop, streaming HTTP, no thread per request.

Each request is released at its scheduled time (arrival process → shaping policy), sent as a
streaming request, and timed at every step: arrival, release, sent, first token, each token, end.
Nothing is dropped: a request that fails or times out is kept with its status and error.

Keeping time: each request's task is created ``lead_s`` before its release and waits for the
instant itself: a timer sleep until ``spin_s`` before it, then yielding to the event loop (streams
in flight keep being read), then the last ``busy_s`` without yielding, so no other callback can
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import polars as pl
from yarl import URL

log = logging.getLogger(__name__)

STATUSES = ("ok", "error", "timeout")


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


# ---------------------------------------------------------------- sending

JSON = {"Content-Type": "application/json"}


def encode_body(target: Target, req: Request) -> bytes:
    """The request's JSON body as bytes, in the target's protocol."""
    proto = PROTOCOLS[target.protocol]()
    return json.dumps(proto.body(target.model, req, target.output_control)).encode()


#: How long before its release a request's task is created (it then waits for the instant).
LEAD_S = 0.004
#: Timer sleep until this long before an instant, then yield to the event loop.
SPIN_S = 0.0012
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
        gc.collect()
        gc.freeze()  # what exists before the load is never scanned during it
        gc.disable()
        try:
            yield self
        finally:
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
) -> Result:
    """Send one streaming request (at ``due``, perf_counter, if given) and time it.

    Never raises for request-level failures: they are kept in the result.
    """
    proto = PROTOCOLS[target.protocol]()
    res = Result(req.index, req.input_len, req.output_len, req.arrival_s, req.release_s)
    body = req.body or encode_body(target, req)
    url = url or endpoint(target)
    final: int | None = None
    done = False
    if due is not None:
        await sleep_until(due)
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
    except (aiohttp.ClientError, OSError, ValueError) as err:
        res.status, res.error = "error", f"{type(err).__name__}: {err}"
    except Exception as err:  # kept as the request's error, never lost: the run goes on
        log.warning("request %d failed unexpectedly: %r", req.index, err)
        res.status, res.error = "error", f"{type(err).__name__}: {err}"
    res.end_s = time.perf_counter() - t0
    if res.token_times_s:
        res.first_token_s = res.token_times_s[0]
    res.output_tokens = final if final is not None else len(res.token_times_s)
    if res.status == "ok" and res.output_tokens == 0:
        res.status, res.error = "error", "the stream ended without a token"
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
) -> tuple[list[Result], float]:
    """Send every request at its ``release_s``; returns the results and t0 (perf_counter)."""
    order = sorted(requests, key=lambda r: (r.release_s, r.index))
    for req in order:  # JSON encoding stays off the timed path
        req.body = req.body or encode_body(target, req)
    url = endpoint(target)
    gc_gaps = GcInGaps()
    async with _session(len(order)) as session:
        with gc_gaps.paused():
            t0 = time.perf_counter() + 0.05  # a moment to finish setting up before the first
            await sleep_until(t0)
            if on_start:
                on_start(t0)
            tasks = []
            for i, req in enumerate(order):
                due = t0 + req.release_s
                # each task waits for its own instant: created early, it sends without a hop
                await asyncio.sleep(max(0.0, due - LEAD_S - time.perf_counter()))
                tasks.append(
                    asyncio.create_task(send(session, target, req, t0, timeout_s, due, url))
                )
                if gc_gaps.due() and i + 1 < len(order):
                    quiet_from = due + gc_gaps.after_send_s
                    quiet_s = t0 + order[i + 1].release_s - LEAD_S - quiet_from
                    if gc_gaps.fits(quiet_s):
                        await asyncio.sleep(max(0.0, quiet_from - time.perf_counter()))
                        gc_gaps.collect(quiet_s)
            results = await asyncio.gather(*tasks)
    log.debug("open-loop load: garbage collections in gaps by generation %s", gc_gaps.collections)
    return sorted(results, key=lambda r: r.index), t0


async def run_closed(
    target: Target,
    requests: Sequence[Request],
    users: int,
    timeout_s: float,
    on_start: Callable[[float], None] | None = None,
) -> tuple[list[Result], float]:
    """``users`` concurrent users, each sending its next request when its last one ends."""
    queue = list(reversed(requests))
    results: list[Result] = []
    async with _session(users) as session:
        t0 = time.perf_counter()
        if on_start:
            on_start(t0)

        async def user() -> None:
            while queue:
                req = queue.pop()
                req.arrival_s = req.release_s = time.perf_counter() - t0
                results.append(await send(session, target, req, t0, timeout_s))

        await asyncio.gather(*(user() for _ in range(users)))
    return sorted(results, key=lambda r: r.index), t0


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
) -> tuple[list[Result], float]:
    """Run the load to completion on a fresh event loop (closed loop when ``users`` is set)."""
    if users:
        coro = run_closed(target, requests, users, timeout_s, on_start)
    else:
        coro = run_open(target, requests, timeout_s, on_start)
    return asyncio.run(coro)
