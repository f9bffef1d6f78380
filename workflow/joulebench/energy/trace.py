"""Power traces: timed power samples per device, and the energy they hold over any interval.

A trace is a tidy table, one row per (sample time, device). How power between two samples is
read depends on what the sensor reports, and every device says which:

- ``instant``: the sample is the power at its instant (NVML ``POWER_INSTANT``); power between
  samples is interpolated linearly and energy is the exact integral of that line.
- ``interval``: the sample is the average power over the interval since the previous sample of
  the same device (a counter delta, or process CPU time); power is constant on that interval.

Energy over ``[a, b]`` is ``C(b) − C(a)`` of the cumulative energy ``C`` of each device, so
attributing many windows (phases, requests) costs one sort and one search, not a loop over rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from joulebench.core.atomic import write_with

INTERPOLATIONS = ("instant", "interval")

#: Columns of every trace table; sensors that lack a quantity leave it null.
TRACE_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "t_s": pl.Float64,
    "device": pl.String,
    "source": pl.String,
    "power_w": pl.Float64,
    "power_field": pl.String,
    "interpolation": pl.String,
    "sm_clock_mhz": pl.Float64,
    "memory_used_mib": pl.Float64,
    "temperature_c": pl.Float64,
    "energy_counter_j": pl.Float64,
    "cpu_util": pl.Float64,
}


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=TRACE_SCHEMA)


def frame(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """A trace table from sample rows (missing quantities become null)."""
    if not rows:
        return empty_frame()
    cols = {name: [r.get(name) for r in rows] for name in TRACE_SCHEMA}
    return pl.DataFrame(cols, schema=TRACE_SCHEMA)


@dataclass(frozen=True)
class PowerTrace:
    """Power samples of one or more devices; ``t_s`` is on the clock the windows were timed with."""

    samples: pl.DataFrame

    @classmethod
    def empty(cls) -> PowerTrace:
        return cls(empty_frame())

    @classmethod
    def concat(cls, traces: Iterable[PowerTrace]) -> PowerTrace:
        frames = [t.samples for t in traces if t.samples.height]
        return cls(pl.concat(frames).sort("device", "t_s") if frames else empty_frame())

    @property
    def devices(self) -> list[str]:
        return sorted(self.samples["device"].unique().to_list())

    def __len__(self) -> int:
        return self.samples.height

    def shifted(self, origin: float) -> PowerTrace:
        """The same trace with ``origin`` subtracted from every time (for saving and plots)."""
        return PowerTrace(self.samples.with_columns(pl.col("t_s") - origin))

    def between(self, start: float, end: float) -> PowerTrace:
        """The samples that cover ``[start, end]``: per device, from its last sample at or before
        ``start`` to its first at or after ``end`` (so the slice integrates the interval)."""
        t = pl.col("t_s")
        lo = t.filter(t <= start).max().over("device").fill_null(-math.inf)
        hi = t.filter(t >= end).min().over("device").fill_null(math.inf)
        return PowerTrace(self.samples.filter((t >= lo) & (t <= hi)))

    def device_arrays(self, device: str) -> tuple[np.ndarray, np.ndarray, str]:
        """Times, power and interpolation of one device, sorted by time, null power dropped."""
        d = self.samples.filter(pl.col("device") == device).sort("t_s")
        kinds = set(d["interpolation"].unique().to_list())
        if len(kinds) > 1:
            raise ValueError(f"trace of '{device}' mixes interpolations {sorted(kinds)}")
        kind = kinds.pop() if kinds else "instant"
        # A sample without power is skipped (instant: interpolate across it; interval: the next
        # sample's mean covers both intervals); an interval trace's first row only marks where
        # its first interval begins, so it stays.
        keep = pl.col("power_w").is_not_null()
        if kind == "interval":
            keep = keep | (pl.int_range(pl.len()) == 0)
        d = d.filter(keep)
        return d["t_s"].to_numpy(), d["power_w"].fill_null(0.0).to_numpy(), kind

    def energy(
        self, starts: Sequence[float], ends: Sequence[float], devices: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Energy (J) of every device over every interval ``[starts[i], ends[i]]``.

        An interval not covered by a device's samples gives NaN for that device: energy is never
        extrapolated.
        """
        a, b = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
        out = {}
        for device in devices if devices is not None else self.devices:
            t, p, kind = self.device_arrays(device)
            out[device] = cumulative_energy(t, p, kind, b) - cumulative_energy(t, p, kind, a)
        return out

    def total_energy(
        self, starts: Sequence[float], ends: Sequence[float], devices: Iterable[str] | None = None
    ) -> float:
        """Energy summed over devices and intervals (NaN if any part is not covered)."""
        per_device = self.energy(starts, ends, devices)
        return float(sum(v.sum() for v in per_device.values())) if per_device else math.nan

    def save(self, path: str | Path) -> None:
        """Write the trace as parquet, atomically."""
        write_with(path, self.samples.write_parquet)

    @classmethod
    def load(cls, path: str | Path) -> PowerTrace:
        return cls(pl.read_parquet(path))


def cumulative_energy(t: np.ndarray, p: np.ndarray, kind: str, q: np.ndarray) -> np.ndarray:
    """Energy from the first sample up to each query time ``q`` (NaN outside the samples)."""
    if kind not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{kind}'; allowed: {', '.join(INTERPOLATIONS)}")
    q = np.asarray(q, dtype=float)
    out = np.full(q.shape, np.nan)
    if len(t) < 2:
        return out
    dt = np.diff(t)
    # instant: trapezoids; interval: sample i holds the mean power of (t[i-1], t[i]]
    steps = dt * (p[1:] + p[:-1]) / 2 if kind == "instant" else dt * p[1:]
    cum = np.concatenate([[0.0], np.cumsum(steps)])
    inside = (q >= t[0]) & (q <= t[-1])
    qi = q[inside]
    k = np.clip(np.searchsorted(t, qi, side="right") - 1, 0, len(t) - 2)
    into = qi - t[k]
    if kind == "instant":
        slope = (p[k + 1] - p[k]) / np.where(dt[k] > 0, dt[k], 1.0)
        partial = into * (p[k] + 0.5 * slope * into)
    else:
        partial = into * p[k + 1]
    out[inside] = cum[k] + partial
    return out
