"""Small statistics without SciPy: Student-t quantiles for confidence intervals."""

from __future__ import annotations

import math
from functools import lru_cache


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
