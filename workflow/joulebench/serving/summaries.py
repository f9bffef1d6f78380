"""What one serving experiment's record says about it: latency, energy and the load achieved.

``latency_summary``: p50/p99 of TTFT, server TTFT, e2e, TPOT, hold and inter-token latency over
the completed requests. ``energy_summary``: the window's energy per request and per token, the
steady-state window's, and the attribution of the power trace to requests (raw and scaled onto
the meter's figure, with its closure and conservation checks). ``load_summary``: requests by
status, offered, scheduled and achieved rates, and the send lag.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from joulebench.energy.attribution import attribute, checks, decode_occupancy, steady_state
from joulebench.energy.base import Measurement
from joulebench.energy.trace import PowerTrace
from joulebench.serving.request import STATUSES
from joulebench.study.serving_specs import Experiment


def quantile(values: pl.Series | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.quantile(arr, q)) if arr.size else math.nan


def latency_summary(table: pl.DataFrame) -> dict[str, float]:
    ok = table.filter(pl.col("status") == "ok")
    itl = np.concatenate(
        [np.diff(np.asarray(t, dtype=float)) for t in ok["token_times_s"].to_list()] or [[]]
    )
    out: dict[str, float] = {}
    for name, values in (
        ("ttft_s", ok["ttft_s"]),
        ("server_ttft_s", ok["server_ttft_s"]),
        ("e2e_s", ok["e2e_s"]),
        ("tpot_s", ok["tpot_s"]),
        ("hold_s", ok["hold_s"]),
        ("itl_s", itl),
    ):
        out[f"{name}_p50"] = quantile(values, 0.5)
        out[f"{name}_p99"] = quantile(values, 0.99)
    return out


def energy_summary(
    table: pl.DataFrame,
    trace: PowerTrace,
    window: Measurement,
    steady_batch: int | str,
    tolerance: float,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The three per-request energies side by side, and each request's share, raw and scaled.

    ``trace`` and ``window`` share one time origin (the load's start). The attribution's raw
    shares come from the trace; closure % and conservation % are taken before any scaling, then
    the shares are scaled by metered / trace energy so that they add up to the meter's figure.
    """
    ok = table["status"] == "ok"
    n_ok = int(ok.sum())
    window_j = window.total_j
    span = (window.start_s, window.end_s)
    devices = [d for d in window.energy_j if d in set(trace.devices)]
    starts, ends = table["sent_s"].to_numpy(), table["end_s"].to_numpy()
    parts = attribute(trace, starts, ends, span, devices)
    check = checks(trace, parts, span, window_j, devices)
    scale = check.scale
    per_request = parts.per_request_j * scale
    first = table["first_token_s"].to_numpy()
    occupancy = decode_occupancy(first, ends, span)
    batch = max(1, round(occupancy)) if steady_batch == "auto" else int(steady_batch)
    tokens_ok = int(table.filter(ok)["output_tokens"].sum())
    steady = steady_state(
        trace,
        np.where(ok.to_numpy(), first, np.nan),
        np.where(ok.to_numpy(), ends, np.nan),
        [np.asarray(t) for t in table.filter(ok)["token_times_s"].to_list()],
        batch,
        devices,
    )
    steady_j = steady.energy_j * scale  # read off the trace; scaled onto the meter as above
    mask = ok.to_numpy()
    summary = {
        "window": {
            "energy_j": window_j,
            "time_s": window.time_s,
            "completed_requests": n_ok,
            "j_per_request": window_j / n_ok if n_ok else math.nan,
            "output_tokens": tokens_ok,
            "j_per_token": window_j / tokens_ok if tokens_ok else math.nan,
        },
        "steady_state": {
            "batch": batch,
            "batch_rule": "auto: time-averaged requests in decode"
            if steady_batch == "auto"
            else "configured",
            "decode_occupancy": occupancy,
            "start_s": steady.start_s,
            "end_s": steady.end_s,
            "energy_raw_j": steady.energy_j,
            "energy_j": steady_j,
            "output_tokens": steady.output_tokens,
            "j_per_token": steady_j / steady.output_tokens if steady.output_tokens else math.nan,
        },
        "attribution": {
            "method": "power split equally among requests in flight [sent, end); none in "
            "flight = idle; raw from the trace, scaled by metered / trace energy",
            "devices": devices,
            "metered_j": window_j,
            "trace_j": check.trace_j,
            "requests_raw_j": float(parts.per_request_j.sum()),
            "idle_raw_j": parts.idle_j,
            "shares_raw_j": parts.shares_j,
            "closure_pct": check.closure_pct,
            "conservation_pct": check.conservation_pct,
            "tolerance_pct": 100.0 * tolerance,
            "ok": check.within(100.0 * tolerance),
            "scale": scale,
            "requests_scaled_j": float(per_request.sum()),
            "idle_scaled_j": parts.idle_j * scale,
            "idle_s": parts.idle_s,
            "j_per_request_raw": float(parts.per_request_j[mask].mean()) if n_ok else math.nan,
            "j_per_request_scaled": float(per_request[mask].mean()) if n_ok else math.nan,
        },
    }
    return summary, parts.per_request_j, per_request


def load_summary(table: pl.DataFrame, window_s: float, exp: Experiment) -> dict[str, Any]:
    sent = table["sent_s"].to_numpy()
    lag = table["send_lag_s"].to_numpy()
    status = table["status"].value_counts()
    counts = dict(zip(status["status"].to_list(), status["count"].to_list(), strict=True))
    span = float(np.nanmax(sent) - np.nanmin(sent)) if sent.size > 1 else math.nan
    arrived = table["arrival_s"].to_numpy()
    arrival_span = float(np.nanmax(arrived) - np.nanmin(arrived)) if arrived.size > 1 else 0.0
    return {
        "requests": table.height,
        **{s: int(counts.get(s, 0)) for s in STATUSES},
        "offered_rate": exp.arrival.get("rate"),
        # the drawn schedule's own rate (a Poisson sample of N differs from the nominal rate)
        "scheduled_rate": (table.height - 1) / arrival_span if arrival_span > 0 else math.nan,
        "achieved_rate": (table.height - 1) / span if span and span > 0 else math.nan,
        "send_lag_s_p50": quantile(lag, 0.5),
        "send_lag_s_p99": quantile(lag, 0.99),
        "send_lag_s_max": float(np.nanmax(lag)) if lag.size else math.nan,
        "load_s": window_s,
        "errors": table.filter(pl.col("status") != "ok")["error"].unique().to_list()[:5],
    }
