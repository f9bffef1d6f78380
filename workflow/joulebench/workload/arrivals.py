"""Arrival processes: when each user request arrives, as offsets in seconds from the load start.

``PROCESSES`` is the one table of arrival processes: each process, what it means, and its
parameters (the keys of a ``serving.arrivals[]`` entry), which are required and their defaults.
Config validation, the experiment list and the tests of the schema and config/README.md read it.

Open-loop processes (constant, Poisson, gamma, the seed study's uniform spacing, a replay of
arrival times from a file) are schedules computed up front from a seed, so a run is reproducible
and the load generator only has to keep time. The closed loop (N users, each sending when its
last answer ends) has no schedule: the load generator drives it.

"Replay" is the arrival process whose config name is ``trace`` (``process: trace`` with a
``trace:`` file); in code it is called replay, so it is never mistaken for a power trace.

The first request always arrives at 0, so the meter window never opens on dead time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from joulebench.core.errors import ConfigError


@dataclass(frozen=True)
class Parameter:
    """One parameter of an arrival process: a key of its ``serving.arrivals[]`` entry."""

    meaning: str
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class Process:
    """One arrival process: what it means and its parameters (by config key)."""

    meaning: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    open_loop: bool = True


#: ``rates``: one experiment per rate; the entry's own list, else ``serving.rates``.
RATES = Parameter("requests per second, one experiment per rate")
#: The config name of the replay process (and of its file's key).
REPLAY = "trace"

PROCESSES: dict[str, Process] = {
    "constant": Process("evenly spaced arrivals, 1/rate apart", {"rates": RATES}),
    "poisson": Process("Poisson arrivals: exponential gaps with mean 1/rate", {"rates": RATES}),
    "gamma": Process(
        "gamma-distributed gaps with mean 1/rate",
        {
            "rates": RATES,
            "burstiness": Parameter(
                "gamma shape k: 1 = Poisson, below 1 burstier, above 1 smoother",
                required=False,
                default=1.0,
            ),
        },
    ),
    "uniform": Process(
        "the seed study's spacing: gaps drawn uniformly between two bounds",
        {
            "break_min": Parameter("shortest gap between arrivals, seconds"),
            "break_max": Parameter("longest gap between arrivals, seconds"),
        },
    ),
    "closed": Process(
        "closed loop: N users, each sending its next request when its last one ends",
        {"users": Parameter("concurrent users")},
        open_loop=False,
    ),
    REPLAY: Process(
        "replay of arrival times from a file (JSONL, CSV or parquet: a `timestamp` column in "
        "seconds, optional `input_len`, `output_len`)",
        {REPLAY: Parameter("the replay file's path (relative to the config file)")},
    ),
}
#: Every parameter key of any process, in table order.
PARAMETERS = tuple(dict.fromkeys(k for p in PROCESSES.values() for k in p.parameters))
#: Processes whose rate comes from a ``rates`` list (the entry's or the serving config's).
RATE_PROCESSES = tuple(name for name, p in PROCESSES.items() if "rates" in p.parameters)


@dataclass(frozen=True)
class ArrivalSpec:
    """One arrival process and its parameters (only those its ``process`` uses are set)."""

    process: str
    rate: float | None = None  # requests per second (constant, poisson, gamma)
    burstiness: float = 1.0  # gamma shape: 1 = Poisson, < 1 burstier, > 1 smoother
    break_min: float | None = None  # uniform spacing bounds, seconds
    break_max: float | None = None
    users: int | None = None  # closed loop
    trace: str | None = None  # replay: a file with a `timestamp` column (config key `trace`)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def spec_params(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``ArrivalSpec`` fields of a ``serving.arrivals[]`` entry, less its rate."""
    own = PROCESSES[entry["process"]].parameters
    return {"process": entry["process"]} | {k: entry[k] for k in own if k != "rates" and k in entry}


def checked_entry(entry: dict[str, Any], key: str, rates: list[float] | None) -> dict[str, Any]:
    """A ``serving.arrivals[]`` entry checked against ``PROCESSES``, its defaults filled in.

    ``rates`` is ``serving.rates``, the default of a rate process's own ``rates``. Errors name
    the entry's key at fault and what is allowed.
    """
    process = entry["process"]
    if process not in PROCESSES:
        raise ConfigError(
            f"{key}.process",
            f"unknown arrival process '{process}'; allowed: {', '.join(PROCESSES)}",
        )
    own = PROCESSES[process].parameters
    for k in PARAMETERS:
        if k in entry and k not in own:
            allowed = ", ".join(own) or "none"
            raise ConfigError(
                f"{key}.{k}", f"does not apply to process '{process}'; its parameters: {allowed}"
            )
    entry = dict(entry)
    for k, param in own.items():
        if k in entry:
            continue
        if k == "rates" and rates:
            continue
        if not param.required:
            entry[k] = param.default
            continue
        where = ", here or in serving.rates" if k == "rates" else ""
        raise ConfigError(f"{key}.{k}", f"process '{process}' needs {k} ({param.meaning}){where}")
    params = spec_params(entry)
    for rate in (entry.get("rates") or rates or [None]) if "rates" in own else [None]:
        check(ArrivalSpec(**params, rate=rate), key)
    return entry


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
    if spec.process == REPLAY and not spec.trace:
        raise ConfigError(f"{key}.{REPLAY}", "a replay needs the path of its file")


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
    if spec.process == REPLAY:
        return read_replay(Path(spec.trace or ""), n)["timestamp"]
    g = gaps(spec, n, np.random.default_rng(seed))
    offsets = np.concatenate([[0.0], np.cumsum(g[1:])]) if n else np.empty(0)
    return offsets


def read_replay(path: Path, n: int | None = None, key: str = REPLAY) -> dict[str, np.ndarray]:
    """A replay file: ``timestamp`` (s, any origin) and optional ``input_len``/``output_len``.

    Rows are sorted by time and shifted so the first arrives at 0; ``n`` keeps the first n.
    Errors name ``key``, the config key that gave the path.
    """
    from joulebench.workload.prompts import read_table

    table = read_table(path, key)
    if "timestamp" not in table.columns:
        raise ConfigError(key, f"{path} has no 'timestamp' column; columns: {table.columns}")
    table = table.sort("timestamp")
    if n is not None:
        if table.height < n:
            raise ConfigError(key, f"{path} has {table.height} rows; {n} requests asked for")
        table = table.head(n)
    ts = table["timestamp"].cast(float).to_numpy()
    out = {"timestamp": ts - ts[0]}
    for col in ("input_len", "output_len"):
        if col in table.columns:
            out[col] = table[col].cast(int).to_numpy()
    return out
