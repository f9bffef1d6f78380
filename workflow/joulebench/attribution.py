"""Energy per request, three ways, as pure functions over a power trace and request intervals.

1. window: the load window's energy / completed requests (the seed study's way);
2. steady state: J/token between the moment the system is full (B requests have their first
   token) and the moment it starts to drain (N − B requests have ended) — ML.ENERGY's way;
3. attribution: each instant's power split equally among the requests in flight at that
   instant; instants with none in flight are booked as idle. The parts sum to the trace's energy.

A trace is a cumulative energy curve sampled at times ``t`` (J at each sample), so power is
piecewise constant between samples and every integral telescopes exactly. Any sampler that can
read cumulative energy (an energy counter, or a power reading integrated) can feed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerTrace:
    """Cumulative energy ``energy_j[i]`` at time ``t[i]`` (s, increasing), with its source."""

    t: np.ndarray
    energy_j: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.t.shape != self.energy_j.shape or self.t.size < 2:
            raise ValueError("a power trace needs at least two (time, energy) samples")
        if np.any(np.diff(self.t) <= 0):
            raise ValueError("power trace times must increase strictly")

    @classmethod
    def from_power(cls, t: np.ndarray, watts: np.ndarray, source: str) -> PowerTrace:
        """From power samples, ``watts[i]`` being the mean power over ``(t[i-1], t[i]]``."""
        t = np.asarray(t, dtype=float)
        w = np.asarray(watts, dtype=float)
        energy = np.concatenate([[0.0], np.cumsum(w[1:] * np.diff(t))])
        return cls(t, energy, source)

    @property
    def watts(self) -> np.ndarray:
        """Mean power over each interval between samples (one fewer than samples)."""
        return np.diff(self.energy_j) / np.diff(self.t)

    def energy_at(self, when: np.ndarray | float) -> np.ndarray:
        """Cumulative energy at ``when`` (linear between samples; clamped to the trace)."""
        return np.interp(when, self.t, self.energy_j)

    def energy_between(self, start: float, end: float) -> float:
        return float(self.energy_at(end) - self.energy_at(start))


@dataclass(frozen=True)
class Attribution:
    """Each request's share of the window's energy, the idle part, and their total."""

    per_request_j: np.ndarray
    idle_j: float
    total_j: float
    idle_s: float

    @property
    def closure_j(self) -> float:
        """requests + idle − total: zero up to rounding (the check that nothing is lost)."""
        return float(self.per_request_j.sum() + self.idle_j - self.total_j)


def attribute(
    trace: PowerTrace,
    starts: np.ndarray,
    ends: np.ndarray,
    window: tuple[float, float],
) -> Attribution:
    """Split the trace's energy in ``window`` among requests in flight over ``[start, end)``."""
    starts = np.clip(np.asarray(starts, dtype=float), *window)
    ends = np.clip(np.asarray(ends, dtype=float), *window)
    if np.any(ends < starts):
        raise ValueError("a request ends before it starts")
    a, b = window
    inside = trace.t[(trace.t > a) & (trace.t < b)]
    bounds = np.unique(np.concatenate([[a, b], inside, starts, ends]))
    seg_j = np.diff(trace.energy_at(bounds))
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
        total_j=trace.energy_between(a, b),
        idle_s=float(np.diff(bounds)[idle].sum()),
    )


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
    return SteadyState(batch, start, end, trace.energy_between(start, end), tokens)
