"""Per-request energy over the one power trace: attribution, its checks, steady state.

Every expectation is worked out by hand from the power the test puts in, never from the
functions under test; the closure and conservation checks are shown to fail when the meter and
the trace disagree.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from joulebench.energy.attribution import attribute, checks, decode_occupancy, steady_state
from joulebench.energy.trace import PowerTrace, frame


def trace_of(t: list[float], watts: list[float], kind: str = "interval", device: str = "gpu"):
    rows = [
        {"t_s": float(ti), "device": device, "power_w": float(p), "interpolation": kind}
        for ti, p in zip(t, watts, strict=True)
    ]
    return PowerTrace(frame(rows))


def flat(watts: float, until: float) -> PowerTrace:
    return trace_of([0.0, until], [watts, watts], "instant")


def test_constant_power_two_overlapping_requests() -> None:
    # 100 W for 10 s. A in flight 0–6, B 4–8: 0–4 A alone, 4–6 shared, 6–8 B alone, 8–10 idle
    parts = attribute(flat(100, 10), np.array([0.0, 4.0]), np.array([6.0, 8.0]), (0.0, 10.0))
    assert parts.per_request_j.tolist() == pytest.approx([400 + 100, 100 + 200])
    assert parts.idle_j == pytest.approx(200)
    assert parts.idle_s == pytest.approx(2)
    c = checks(flat(100, 10), parts, (0.0, 10.0), metered_j=1000.0)
    assert c.closure_pct == pytest.approx(0, abs=1e-9)
    assert c.conservation_pct == pytest.approx(0, abs=1e-9)


def test_power_steps_follow_the_trace() -> None:
    # interval samples: 50 W over (0, 2], 150 W over (2, 4]; one request 1–3 gets 50 + 150
    trace = trace_of([0.0, 2.0, 4.0], [0.0, 50.0, 150.0])
    parts = attribute(trace, np.array([1.0]), np.array([3.0]), (0.0, 4.0))
    assert parts.per_request_j[0] == pytest.approx(200)
    assert parts.idle_j == pytest.approx(50 + 150)


def test_two_devices_are_summed() -> None:
    cpu = trace_of([0.0, 10.0], [30.0, 30.0], "instant", "cpu")
    both = PowerTrace.concat([flat(100, 10), cpu])
    parts = attribute(both, np.array([0.0]), np.array([5.0]), (0.0, 10.0))
    assert parts.per_request_j[0] == pytest.approx(650)
    assert parts.idle_j == pytest.approx(650)
    only_gpu = attribute(both, np.array([0.0]), np.array([5.0]), (0.0, 10.0), ["gpu"])
    assert only_gpu.per_request_j[0] == pytest.approx(500)


def swept_shares(
    t: np.ndarray, watts: np.ndarray, starts: np.ndarray, ends: np.ndarray, window: tuple
) -> list[float]:
    """Each request's share worked out by a plain sweep over every boundary (trace samples,
    request starts and ends): between two boundaries the interval power is constant and is split
    equally among the requests in flight over the whole piece."""
    cuts = sorted({*t.tolist(), *starts.tolist(), *ends.tolist(), *window})
    cuts = [c for c in cuts if window[0] <= c <= window[1]]
    shares = [0.0] * len(starts)
    for a, b in itertools.pairwise(cuts):
        i = int(np.searchsorted(t, b))  # the trace interval (t[i-1], t[i]] holding (a, b]
        power = float(watts[i])
        flying = [k for k in range(len(starts)) if starts[k] <= a and ends[k] >= b]
        for k in flying:
            shares[k] += power * (b - a) / len(flying)
    return shares


def test_random_requests_split_a_known_energy() -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.01, 0.1, 200))
    watts = rng.uniform(10, 300, 200)
    known = float((np.diff(t) * watts[1:]).sum())  # interval means × their intervals
    trace = trace_of(t.tolist(), watts.tolist())
    starts = rng.uniform(t[0], t[-1], 80)
    ends = starts + rng.uniform(0, 2, 80)
    window = (float(t[0]), float(t[-1]))
    parts = attribute(trace, starts, ends, window)
    expected = swept_shares(t, watts, starts, ends, window)
    assert parts.per_request_j.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert sum(expected) > 0
    c = checks(trace, parts, window, metered_j=known)
    assert abs(c.closure_pct) < 1e-9 and abs(c.conservation_pct) < 1e-9
    assert c.within(0.01)


def test_checks_fail_when_meter_and_trace_disagree() -> None:
    # a meter that read 10% more than the trace holds: both checks say −9.09%, and fail
    trace = flat(100, 10)
    parts = attribute(trace, np.array([1.0]), np.array([3.0]), (0.0, 10.0))
    c = checks(trace, parts, (0.0, 10.0), metered_j=1100.0)
    assert c.conservation_pct == pytest.approx(100 * (1000 - 1100) / 1100)
    assert c.closure_pct == pytest.approx(100 * (1000 - 1100) / 1100)
    assert c.scale == pytest.approx(1.1)
    assert not c.within(2.0) and c.within(10.0)


def test_a_window_the_trace_does_not_cover_is_nan_and_fails() -> None:
    trace = trace_of([1.0, 2.0], [10.0, 10.0], "instant")
    parts = attribute(trace, np.array([0.5]), np.array([1.5]), (0.0, 2.0))
    c = checks(trace, parts, (0.0, 2.0), metered_j=20.0)
    assert math.isnan(c.trace_j) and math.isnan(c.closure_pct)
    assert not c.within(100.0)


def test_window_clips_requests() -> None:
    parts = attribute(flat(10, 10), np.array([-5.0]), np.array([20.0]), (2.0, 4.0))
    assert parts.per_request_j[0] == pytest.approx(20)
    assert parts.idle_j == 0


def test_steady_state_window_is_full_to_drain() -> None:
    # 4 requests; batch 2: from the 2nd first token (t=2) to the 2nd end (t=6)
    first = np.array([1.0, 2.0, 3.0, 4.0])
    ends = np.array([5.0, 6.0, 7.0, 8.0])
    tokens = [np.arange(f, e + 1e-9, 0.5) for f, e in zip(first, ends, strict=True)]
    s = steady_state(flat(10, 10), first, ends, tokens, batch=2)
    assert (s.start_s, s.end_s) == (2.0, 6.0)
    assert s.energy_j == pytest.approx(40)
    # tokens in (2, 6]: request 1 (first 1) 2.5…5 = 6, request 2 2.5…6 = 8, 3: 3…6 = 7, 4: 4…6 = 5
    assert s.output_tokens == 6 + 8 + 7 + 5
    assert np.isnan(steady_state(flat(10, 10), first, ends, tokens, batch=4).j_per_token)
    assert decode_occupancy(first, ends, (0.0, 10.0)) == pytest.approx(1.6)
