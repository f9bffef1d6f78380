import math

import pytest
from joulebench.stats import ci_half_width, t_quantile


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
