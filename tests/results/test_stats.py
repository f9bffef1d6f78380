import math

import numpy as np
import pytest
from joulebench.results.stats import (
    MAX_REPS,
    Interval,
    bootstrap_means,
    ci_half_width,
    expanded_tail,
    t_quantile,
)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 4, 2.7764),
        (0.975, 30, 2.0423),
        (0.995, 9, 3.2498),
        (0.95, 10, 1.8125),
    ],
)
def test_t_quantile_matches_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-4)


def test_ci_half_width() -> None:
    assert ci_half_width(2.0, 5) == pytest.approx(2.7764 * 2 / math.sqrt(5), rel=1e-4)
    assert math.isnan(ci_half_width(1.0, 1))


def test_t_quantile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"0\.5 < p < 1"):
        t_quantile(0.4, 3)


def test_reps_to_settle_shrinks_the_half_width_as_one_over_root_n() -> None:
    iv = Interval(estimate=1.05, low=0.95, high=1.15, reps=5, confidence=0.95)
    assert iv.versus(1.10) is None and iv.versus(0.9) is True and iv.versus(1.2) is False
    # half width 0.10 toward the threshold, gap 0.05: (0.10 / 0.05)² × 5 repetitions
    assert iv.reps_to_settle(1.10) == 20
    assert iv.reps_to_settle(1.2) is None
    assert Interval(1.1, 1.0, 1.2, 5, 0.95).reps_to_settle(1.1) == MAX_REPS + 1


def test_expanded_percentile_tail() -> None:
    # √(5/4) · t(0.975, 4 df) = 1.1180 · 2.7764 = 3.1041; Φ(−3.1041) = 0.000954
    assert expanded_tail(0.95, 5) == pytest.approx(0.000954, rel=0.02)
    assert expanded_tail(0.95, 10_000) == pytest.approx(0.025, rel=0.01)


def test_bootstrap_means_are_seeded_by_key() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    a, b = bootstrap_means(values, "x"), bootstrap_means(values, "x")
    assert (a == b).all() and not (a == bootstrap_means(values, "y")).all()
    assert a.min() >= 1.0 and a.max() <= 4.0 and abs(a.mean() - 2.5) < 0.05


def test_from_draws_takes_the_expanded_percentiles_in_order() -> None:
    # draws 0, 1, …, 1000: the q-th percentile is 10·q exactly. With 5 repetitions each tail
    # holds Φ(−3.1041) = 0.000954 (see above), so the interval runs from 0.954 to 999.046,
    # far wider than the plain 95% percentile interval [25, 975].
    draws = np.arange(1001, dtype=float)[::-1]  # order of the draws does not matter
    iv = Interval.from_draws(500.0, draws, reps=5)
    assert iv.low == pytest.approx(0.954, abs=0.02)
    assert iv.high == pytest.approx(999.046, abs=0.02)
    assert (iv.estimate, iv.reps, iv.confidence) == (500.0, 5, 0.95)
    # one repetition: nothing to expand, the plain percentile interval
    plain = Interval.from_draws(500.0, draws, reps=1, confidence=0.9)
    assert (plain.low, plain.high) == pytest.approx((50.0, 950.0))
