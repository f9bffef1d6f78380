"""Energy per request, three ways, as pure functions over a power trace and request intervals.

1. window: the load window's metered energy / completed requests (the seed study's way);
2. steady state: J/token between the moment the system is full (B requests have their first
   token) and the moment it starts to drain (N − B requests have ended) — ML.ENERGY's way;
3. attribution: each instant's power split equally among the requests in flight at that
   instant; instants with none in flight are booked as idle.

The trace is the meters' one :class:`~joulebench.energy.trace.PowerTrace` (every device summed);
its out-of-range rule holds here too: an interval the trace does not cover is NaN, never
extrapolated. Two checks are recorded *before* any scaling, and both can fail:

- closure % = 100 · (Σ request shares + idle share − metered) / metered: what the attribution
  split, against the meter's window energy;
- conservation % = 100 · (trace integral − metered) / metered: the trace, integrated on its own,
  against the meter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from joulebench.energy.trace import PowerTrace


def _cumulative(
    trace: PowerTrace, origin: float, at: np.ndarray, devices: Iterable[str] | None
) -> np.ndarray:
    """Energy of every device summed, from ``origin`` to each time in ``at`` (NaN uncovered)."""
    per_device = trace.energy(np.full(at.shape, origin), at, devices)
    if not per_device:
        return np.full(at.shape, math.nan)
    return np.sum(list(per_device.values()), axis=0)


@dataclass(frozen=True)
class Attribution:
    """Each request's share of the trace's energy in a window, the idle part, unscaled."""

    per_request_j: np.ndarray
    idle_j: float
    idle_s: float

    @property
    def shares_j(self) -> float:
        """Requests + idle: what the attribution split."""
        return float(self.per_request_j.sum() + self.idle_j)


def attribute(
    trace: PowerTrace,
    starts: np.ndarray,
    ends: np.ndarray,
    window: tuple[float, float],
    devices: Iterable[str] | None = None,
) -> Attribution:
    """Split the trace's energy in ``window`` among requests in flight over ``[start, end)``."""
    starts = np.clip(np.asarray(starts, dtype=float), *window)
    ends = np.clip(np.asarray(ends, dtype=float), *window)
    if np.any(ends < starts):
        raise ValueError("a request ends before it starts")
    a, b = window
    devices = list(devices) if devices is not None else None
    bounds = np.unique(np.concatenate([[a, b], starts, ends]))
    seg_j = np.diff(_cumulative(trace, a, bounds, devices))
    mid = (bounds[:-1] + bounds[1:]) / 2
    in_flight = np.searchsorted(np.sort(starts), mid, side="right") - np.searchsorted(
        np.sort(ends), mid, side="right"
    )
    idle = in_flight == 0
    share = np.where(idle, 0.0, seg_j / np.maximum(in_flight, 1))
    cumulative = np.concatenate([[0.0], np.cumsum(share)])
    per_request = (
        cumulative[np.searchsorted(bounds, ends)] - cumulative[np.searchsorted(bounds, starts)]
    )
    return Attribution(
        per_request_j=per_request,
        idle_j=float(seg_j[idle].sum()),
        idle_s=float(np.diff(bounds)[idle].sum()),
    )


def _pct(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference if reference > 0 else math.nan


@dataclass(frozen=True)
class Checks:
    """The attribution and the trace against the meter, before any scaling."""

    metered_j: float
    trace_j: float
    shares_j: float

    @property
    def closure_pct(self) -> float:
        return _pct(self.shares_j, self.metered_j)

    @property
    def conservation_pct(self) -> float:
        return _pct(self.trace_j, self.metered_j)

    @property
    def scale(self) -> float:
        """metered / trace: what puts trace-derived energies onto the meter's figure."""
        return self.metered_j / self.trace_j if self.trace_j > 0 else math.nan

    def within(self, tolerance_pct: float) -> bool:
        """Both checks finite and within ``tolerance_pct``."""
        return all(
            math.isfinite(v) and abs(v) <= tolerance_pct
            for v in (self.closure_pct, self.conservation_pct)
        )


def checks(
    trace: PowerTrace,
    parts: Attribution,
    window: tuple[float, float],
    metered_j: float,
    devices: Iterable[str] | None = None,
) -> Checks:
    """Closure and conservation of one window; the trace integral is taken on its own."""
    trace_j = trace.total_energy([window[0]], [window[1]], devices)
    return Checks(metered_j=metered_j, trace_j=trace_j, shares_j=parts.shares_j)


def decode_occupancy(first: np.ndarray, ends: np.ndarray, window: tuple[float, float]) -> float:
    """Time-averaged number of requests between first token and end over ``window``."""
    a, b = window
    ok = np.isfinite(first) & np.isfinite(ends)
    busy = np.clip(ends[ok], a, b) - np.clip(first[ok], a, b)
    return float(busy.sum() / (b - a)) if b > a else math.nan


@dataclass(frozen=True)
class SteadyState:
    """ML.ENERGY's steady-state window and its J/token (NaN when the system never fills)."""

    batch: int
    start_s: float
    end_s: float
    energy_j: float
    output_tokens: int

    @property
    def j_per_token(self) -> float:
        return self.energy_j / self.output_tokens if self.output_tokens else math.nan

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def steady_state(
    trace: PowerTrace,
    first: np.ndarray,
    ends: np.ndarray,
    token_times: list[np.ndarray],
    batch: int,
    devices: Iterable[str] | None = None,
) -> SteadyState:
    """From the B-th first token to the (N − B)-th end: the system full, before it drains."""
    first_sorted = np.sort(first[np.isfinite(first)])
    ends_sorted = np.sort(ends[np.isfinite(ends)])
    n = ends_sorted.size
    if batch < 1 or first_sorted.size < batch or n - batch < 1:
        return SteadyState(batch, math.nan, math.nan, math.nan, 0)
    start, end = float(first_sorted[batch - 1]), float(ends_sorted[n - batch - 1])
    if not end > start:
        return SteadyState(batch, start, end, math.nan, 0)
    tokens = sum(int(((t > start) & (t <= end)).sum()) for t in token_times)
    energy = trace.total_energy([start], [end], devices)
    return SteadyState(batch, start, end, energy, tokens)
