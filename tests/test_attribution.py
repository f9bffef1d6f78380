"""Per-request energy: attribution, steady state and the power trace, with known answers."""

from __future__ import annotations

import time

import numpy as np
import pytest
from joulebench.attribution import PowerTrace, attribute, decode_occupancy, steady_state
from joulebench.powertrace import TraceSampler


def flat(watts: float, until: float) -> PowerTrace:
    return PowerTrace(np.array([0.0, until]), np.array([0.0, watts * until]), "test")


def test_constant_power_two_overlapping_requests() -> None:
    # 100 W for 10 s. A in flight 0–6, B 4–8: 0–4 A alone, 4–6 shared, 6–8 B alone, 8–10 idle
    parts = attribute(flat(100, 10), np.array([0.0, 4.0]), np.array([6.0, 8.0]), (0.0, 10.0))
    assert parts.per_request_j.tolist() == pytest.approx([400 + 100, 100 + 200])
    assert parts.idle_j == pytest.approx(200)
    assert parts.idle_s == pytest.approx(2)
    assert parts.total_j == pytest.approx(1000)
    assert parts.closure_j == pytest.approx(0, abs=1e-9)


def test_power_steps_follow_the_trace() -> None:
    # 50 W on 0–2, 150 W on 2–4; one request 1–3 gets 50 + 150
    trace = PowerTrace.from_power(np.array([0.0, 2.0, 4.0]), np.array([0.0, 50.0, 150.0]), "t")
    parts = attribute(trace, np.array([1.0]), np.array([3.0]), (0.0, 4.0))
    assert parts.per_request_j[0] == pytest.approx(200)
    assert parts.idle_j == pytest.approx(50 + 150)


def test_random_requests_always_close() -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.01, 0.1, 200))
    trace = PowerTrace.from_power(t, rng.uniform(10, 300, 200), "t")
    starts = rng.uniform(t[0], t[-1], 80)
    ends = starts + rng.uniform(0, 2, 80)
    parts = attribute(trace, starts, ends, (t[0], t[-1]))
    assert parts.per_request_j.min() >= 0
    assert parts.per_request_j.sum() + parts.idle_j == pytest.approx(parts.total_j, rel=1e-12)


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
    assert s.output_tokens == sum(int(((t > 2) & (t <= 6)).sum()) for t in tokens)
    assert np.isnan(steady_state(flat(10, 10), first, ends, tokens, batch=4).j_per_token)
    assert decode_occupancy(first, ends, (0.0, 10.0)) == pytest.approx(1.6)


def test_sampler_trace_integrates_the_reading() -> None:
    start = time.perf_counter()
    sampler = TraceSampler(lambda: 40.0 * (time.perf_counter() - start), 0.01, "test").start()
    time.sleep(0.2)
    trace = sampler.stop(origin=start)
    assert trace.t.size >= 10
    assert np.median(trace.watts) == pytest.approx(40.0, rel=0.05)
    assert trace.energy_between(trace.t[0], trace.t[-1]) == pytest.approx(
        40 * (trace.t[-1] - trace.t[0]), rel=0.05
    )


def test_server_meter_follows_the_server_process_tree() -> None:
    import subprocess
    import sys

    from joulebench.powertrace import ServerEstimateMeter

    busy = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", busy], start_new_session=True)
    try:
        time.sleep(0.5)  # the busy grandchild is running
        meter = ServerEstimateMeter(proc.pid, idle_w=0.0, tdp_w=20.0)
        meter.begin_window("w")
        time.sleep(0.5)
        m = meter.end_window("w")
        # at most one busy core of meter.cores for 0.5 s (less on a crowded machine); a meter of
        # our own process, idle meanwhile, would read ~0
        full = 20.0 * m.time_s / meter.cores
        assert m.source == "estimate"
        assert 0.15 * full < m.total_j <= 1.1 * full
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
