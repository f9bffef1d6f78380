"""Small statistics without SciPy: Student-t quantiles for confidence intervals of means, and
seeded bootstrap intervals of ratios over repetitions (expanded percentile intervals, which keep
their coverage with a handful of repetitions), with what it takes to settle one."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(x: float, df: int, steps: int = 2000) -> float:
    """P(T <= x) for x >= 0 by Simpson integration of the density from 0 to x."""
    h = x / steps
    total = _t_pdf(0.0, df) + _t_pdf(x, df)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * _t_pdf(i * h, df)
    return 0.5 + total * h / 3


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def ci_half_width(std: float, n: int, confidence: float = 0.95) -> float:
    """Half width of the two-sided confidence interval of a mean of ``n`` samples."""
    if n < 2 or math.isnan(std):
        return math.nan
    return t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)


#: Bootstrap resamples per confidence interval, and the seed every interval derives its own from.
RESAMPLES = 2000
SEED = 0

#: The most repetitions ``reps_to_settle`` estimates; beyond it the ratio sits on its threshold.
MAX_REPS = 1000


def seed_for(key: str, seed: int = SEED) -> int:
    """A seed of its own for ``key``, so an interval does not depend on what was drawn before."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def bootstrap_means(values: Sequence[float], key: str, resamples: int = RESAMPLES) -> np.ndarray:
    """``resamples`` means of ``values`` resampled with replacement (seeded by ``key``)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        raise ValueError(f"no finite values to resample for {key}")
    rng = np.random.default_rng(seed_for(key))
    return x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)


def expanded_tail(confidence: float, reps: int) -> float:
    """The tail probability of each end of an expanded percentile interval over ``reps``."""
    if reps < 2:
        return (1 - confidence) / 2
    z = math.sqrt(reps / (reps - 1)) * t_quantile(0.5 + confidence / 2, reps - 1)
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class Interval:
    """An estimate, its percentile-bootstrap interval, and the repetitions behind it."""

    estimate: float
    low: float
    high: float
    reps: int
    confidence: float

    @classmethod
    def from_draws(
        cls, estimate: float, draws: np.ndarray, reps: int, confidence: float = 0.95
    ) -> Interval:
        """The expanded percentile interval of bootstrap ``draws`` (Hesterberg 2015): the
        plain percentile interval is too narrow for a handful of repetitions, so its tail
        level is taken where the normal quantile equals √(n/(n−1))·t(n−1), not z."""
        tail = expanded_tail(confidence, reps)
        low, high = np.percentile(draws, [100 * tail, 100 * (1 - tail)])
        return cls(float(estimate), float(low), float(high), reps, confidence)

    def versus(self, threshold: float) -> bool | None:
        """True when the whole interval is at or above ``threshold``, False when it is below,
        None when it straddles it (the data cannot tell)."""
        if self.low >= threshold:
            return True
        if self.high < threshold:
            return False
        return None

    def reps_to_settle(self, threshold: float) -> int | None:
        """Repetitions per configuration that would likely move the interval off ``threshold``
        (its half width shrinks as 1/√n); None when it is settled, MAX_REPS + 1 when the
        estimate sits on the threshold."""
        if self.versus(threshold) is not None:
            return None
        gap = abs(self.estimate - threshold)
        half = self.high - self.estimate if threshold > self.estimate else self.estimate - self.low
        if gap <= 0 or half <= 0:
            return MAX_REPS + 1
        return min(MAX_REPS + 1, max(self.reps + 1, math.ceil(self.reps * (half / gap) ** 2)))

    def text(self, unit: str = "×") -> str:
        return (
            f"{self.estimate:.2f}{unit} [{self.low:.2f}–{self.high:.2f}, "
            f"{self.confidence:.0%} CI, n={self.reps}]"
        )
