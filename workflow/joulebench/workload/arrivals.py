"""Arrival processes: when each user request arrives, as offsets in seconds from the load start.

Open-loop processes (constant, Poisson, gamma, the seed study's uniform spacing, trace replay)
are schedules computed up front from a seed, so a run is reproducible and the load generator
only has to keep time. The closed loop (N users, each sending when its last answer ends) has no
schedule: the load generator drives it.

The first request always arrives at 0, so the meter window never opens on dead time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from joulebench.core.errors import ConfigError

PROCESSES = ("constant", "poisson", "gamma", "uniform", "closed", "trace")
#: Processes whose rate comes from the ``rates`` list of the serving config.
RATE_PROCESSES = ("constant", "poisson", "gamma")


@dataclass(frozen=True)
class ArrivalSpec:
    """One arrival process and its parameters (only those its ``process`` uses are set)."""

    process: str
    rate: float | None = None  # requests per second (constant, poisson, gamma)
    burstiness: float = 1.0  # gamma shape: 1 = Poisson, < 1 burstier, > 1 smoother
    break_min: float | None = None  # uniform spacing bounds, seconds
    break_max: float | None = None
    users: int | None = None  # closed loop
    trace: str | None = None  # trace replay: a file with a `timestamp` column (seconds)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check(spec: ArrivalSpec, key: str = "arrival") -> None:
    """Raise ConfigError naming the key if ``spec`` cannot describe a schedule."""
    if spec.process not in PROCESSES:
        raise ConfigError(
            f"{key}.process",
            f"unknown arrival process '{spec.process}'; allowed: {', '.join(PROCESSES)}",
        )
    if spec.process in RATE_PROCESSES and (spec.rate is None or not spec.rate > 0):
        raise ConfigError(f"{key}.rate", f"must be > 0 requests/s, got {spec.rate}")
    if spec.process == "gamma" and not spec.burstiness > 0:
        raise ConfigError(f"{key}.burstiness", f"must be > 0, got {spec.burstiness}")
    if spec.process == "uniform":
        lo, hi = spec.break_min, spec.break_max
        if lo is None or hi is None or lo < 0 or hi < lo or hi == 0:
            raise ConfigError(
                f"{key}.break_min",
                f"uniform spacing needs 0 <= break_min <= break_max, break_max > 0; got {lo}, {hi}",
            )
    if spec.process == "closed" and (spec.users is None or spec.users < 1):
        raise ConfigError(f"{key}.users", f"closed loop needs users >= 1, got {spec.users}")
    if spec.process == "trace" and not spec.trace:
        raise ConfigError(f"{key}.trace", "trace replay needs a trace file path")


def gaps(spec: ArrivalSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` inter-arrival gaps in seconds for a synthetic open-loop process."""
    if spec.process == "constant":
        return np.full(n, 1.0 / spec.rate)  # type: ignore[operator]
    if spec.process == "poisson":
        return rng.exponential(1.0 / spec.rate, n)  # type: ignore[operator]
    if spec.process == "gamma":
        # shape k, scale 1/(rate k): mean 1/rate, coefficient of variation 1/sqrt(k)
        k = spec.burstiness
        return rng.gamma(k, 1.0 / (spec.rate * k), n)  # type: ignore[operator]
    if spec.process == "uniform":
        return rng.uniform(spec.break_min, spec.break_max, n)  # type: ignore[arg-type]
    raise ConfigError("arrival.process", f"'{spec.process}' has no synthetic gaps")


def schedule(spec: ArrivalSpec, n: int, seed: int) -> np.ndarray | None:
    """Arrival offsets (s) of ``n`` requests, first at 0; None for the closed loop."""
    if spec.process == "closed":
        return None
    if spec.process == "trace":
        return read_trace(Path(spec.trace or ""), n)["timestamp"]
    g = gaps(spec, n, np.random.default_rng(seed))
    offsets = np.concatenate([[0.0], np.cumsum(g[1:])]) if n else np.empty(0)
    return offsets


def read_trace(path: Path, n: int | None = None) -> dict[str, np.ndarray]:
    """A replay trace: ``timestamp`` (s, any origin) and optional ``input_len``/``output_len``.

    Rows are sorted by time and shifted so the first arrives at 0; ``n`` keeps the first n.
    """
    from joulebench.workload.prompts import read_table

    table = read_table(path, "trace")
    if "timestamp" not in table.columns:
        raise ConfigError("trace", f"{path} has no 'timestamp' column; columns: {table.columns}")
    table = table.sort("timestamp")
    if n is not None:
        if table.height < n:
            raise ConfigError("trace", f"{path} has {table.height} rows; {n} requests asked for")
        table = table.head(n)
    ts = table["timestamp"].cast(float).to_numpy()
    out = {"timestamp": ts - ts[0]}
    for col in ("input_len", "output_len"):
        if col in table.columns:
            out[col] = table[col].cast(int).to_numpy()
    return out
