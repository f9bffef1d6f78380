"""How the findings reach a verdict: the verdict words, the margin, the deciding ratios with
their bootstrap intervals, and the rule that a verdict is given only when every way the unsettled
intervals could fall gives the same one (else "inconclusive", with the repetitions that would
likely settle it). The claims themselves are in offline_claims, serving_claims and slo.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

from joulebench.results.stats import MAX_REPS, RESAMPLES, SEED, Interval

#: A difference smaller than this factor is treated as no difference (noise, estimate).
MARGIN = 1.10

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly holds", "does not hold", "missing data"
INCONCLUSIVE = "inconclusive"
#: Not a verdict on a claim: the SLO finding recommends a configuration.
RECOMMENDATION = "recommendation"

#: How the intervals are made, said in every rule.
CI_RULE = (
    f"Intervals: percentile bootstrap over repetitions ({RESAMPLES} resamples, seed {SEED}, "
    f"each configuration resampled on its own); a condition counts only when its interval lies "
    f"wholly on one side of its threshold, and the verdict is inconclusive when the unsettled "
    f"conditions could still change it."
)


@dataclass(frozen=True)
class Deciding:
    """One ratio a verdict rests on: its interval and the threshold it is read against."""

    name: str
    interval: Interval
    threshold: float
    unit: str = "repetitions"

    @property
    def reading(self) -> str:
        side = self.interval.versus(self.threshold)
        if side is not None:
            return "above" if side else "below"
        need = self.interval.reps_to_settle(self.threshold)
        more = f"> {MAX_REPS}" if need is None or need > MAX_REPS else f"~{need}"
        return f"straddles ({more} {self.unit} to settle)"


@dataclass
class Finding:
    """One claim, its computed verdict, and the numbers behind it."""

    title: str
    claim: str
    verdict: str
    summary: str
    rule: str
    table: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    deciding: list[Deciding] = field(default_factory=list)

    def deciding_table(self) -> pl.DataFrame:
        """The deciding ratios as the report shows them (and as the tables behind it carry)."""
        return pl.DataFrame(
            {
                "deciding ratio": [d.name for d in self.deciding],
                "estimate_x": [round(d.interval.estimate, 3) for d in self.deciding],
                "ci_low": [round(d.interval.low, 3) for d in self.deciding],
                "ci_high": [round(d.interval.high, 3) for d in self.deciding],
                "n": [d.interval.reps for d in self.deciding],
                "threshold_x": [d.threshold for d in self.deciding],
                "reading": [d.reading for d in self.deciding],
            },
            schema_overrides={"threshold_x": pl.Float64},
        )


def decide(
    conditions: Mapping[str, bool | None], rule: Callable[[Mapping[str, bool]], str]
) -> tuple[str, set[str]]:
    """The verdict ``rule`` gives, if every way the unsettled (None) conditions could fall gives
    the same one; else INCONCLUSIVE. Also returns the verdicts still possible."""
    unknown = [k for k, v in conditions.items() if v is None]
    if len(unknown) > 12:
        return INCONCLUSIVE, set()
    possible = {
        rule({**conditions, **dict(zip(unknown, values, strict=True))})  # type: ignore[dict-item]
        for values in itertools.product((True, False), repeat=len(unknown))
    }
    return (next(iter(possible)) if len(possible) == 1 else INCONCLUSIVE), possible


def unsettled_text(verdict: str, possible: set[str], deciding: list[Deciding], unit: str) -> str:
    """Why a verdict is inconclusive, and what would likely settle it (``unit``: what is
    repeated, e.g. "repetitions per configuration")."""
    if verdict != INCONCLUSIVE:
        return ""
    straddling = [d for d in deciding if d.interval.versus(d.threshold) is None]
    need = max(d.interval.reps_to_settle(d.threshold) or MAX_REPS + 1 for d in straddling)
    now = min(d.interval.reps for d in straddling)
    more = f"more than {MAX_REPS}" if need > MAX_REPS else f"about {need}"
    names = "; ".join(f"{d.name} {d.interval.text()}" for d in straddling)
    could = " or ".join(f"“{v}”" for v in sorted(possible)) or "any verdict"
    return (
        f" Inconclusive: it could still be {could}. Straddling its threshold: {names}. "
        f"{more.capitalize()} {unit} (now {now}) would likely settle it."
    )
