"""One request of a load and what became of it: its plan, its result, the per-request table.

A ``Request`` says what to send and when (offsets in seconds from the load start); a ``Result``
keeps every time step of it (arrival, release, sent, first token, each token, end) and its
status, so nothing is dropped: a request that fails, times out or is never sent is kept with its
status and error. ``results_table`` turns the results into one row per request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

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
