"""A benchmark record at a glance: per phase, the medians over repetitions that `joulebench bench`
prints when it has written the record."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

#: The phases a record's runs are measured in, in the order they are shown.
PHASES = ("prefill", "decode", "full")


@dataclass(frozen=True)
class PhaseMedians:
    """One phase of a record: medians over its repetitions (NaN where no run has the value)."""

    phase: str
    repetitions: int
    j_per_token: float
    direct_j_per_token: float
    net_j_per_token: float
    tokens_per_s: float
    conservation_pct: float


def _median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return median(present) if present else float("nan")


def _per_token(run: dict[str, Any], key: str) -> float | None:
    return None if run.get(key) is None else run[key] / run["tokens"]


def phase_medians(record: dict[str, Any]) -> list[PhaseMedians]:
    """The medians of each phase of an ``ok`` record's runs (energy per token three ways —
    idle subtracted, direct, net — throughput and the trace-vs-meter conservation)."""
    found = []
    for phase in PHASES:
        runs = [r for r in record["runs"] if r["phase"] == phase]
        found.append(
            PhaseMedians(
                phase=phase,
                repetitions=len(runs),
                j_per_token=_median([r["energy_j"] / r["tokens"] for r in runs]),
                direct_j_per_token=_median([_per_token(r, "direct_energy_j") for r in runs]),
                net_j_per_token=_median([_per_token(r, "net_energy_j") for r in runs]),
                tokens_per_s=_median([r["tokens"] / r["time_s"] for r in runs]),
                conservation_pct=_median([r["conservation_pct"] for r in runs]),
            )
        )
    return found
