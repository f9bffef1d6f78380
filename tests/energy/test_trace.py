"""Power-trace integration and phase attribution on synthetic traces with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from joulebench.energy.trace import PowerTrace, cumulative_energy, frame


def trace_of(t: np.ndarray, p: np.ndarray, kind: str, device: str = "gpu") -> PowerTrace:
    rows = [
        {"t_s": float(ti), "device": device, "power_w": float(pi), "interpolation": kind}
        for ti, pi in zip(t, p, strict=True)
    ]
    return PowerTrace(frame(rows))


def test_instant_trace_integrates_the_line_between_samples_exactly() -> None:
    # a ramp from 0 W at t=0 to 100 W at t=1: energy over [0, 1] is 50 J, over [0.5, 1] 37.5 J
    tr = trace_of(np.array([0.0, 1.0]), np.array([0.0, 100.0]), "instant")
    e = tr.energy([0.0, 0.5, 0.25], [1.0, 1.0, 0.75])["gpu"]
    assert e == pytest.approx([50.0, 37.5, 25.0])


def test_interval_trace_holds_each_mean_over_its_interval() -> None:
    # sample at t=1 says 100 W over (0, 1]; at t=3, 300 W over (1, 3]
    tr = trace_of(np.array([0.0, 1.0, 3.0]), np.array([0.0, 100.0, 300.0]), "interval")
    e = tr.energy([0.0, 1.0, 0.5, 0.0], [1.0, 3.0, 1.5, 3.0])["gpu"]
    assert e == pytest.approx([100.0, 600.0, 50.0 + 150.0, 700.0])


def test_no_extrapolation_outside_the_samples() -> None:
    tr = trace_of(np.array([1.0, 2.0]), np.array([10.0, 10.0]), "instant")
    e = tr.energy([0.5, 1.0], [1.5, 2.5])["gpu"]
    assert math.isnan(e[0]) and math.isnan(e[1])
    assert tr.total_energy([1.0], [2.0]) == pytest.approx(10.0)
    assert math.isnan(cumulative_energy(np.array([1.0]), np.array([5.0]), "instant", 1.0))


def test_phase_attribution_on_a_sampled_square_wave() -> None:
    """Prefill at 300 W for 0.2 s, then decode at 120 W for 1.8 s, sampled at 50 Hz (instant).

    The sensor's samples straddle the boundary, so the answer is exact up to one sample period
    of the 180 W step: |error| ≤ 180 W × 0.02 s / 2 ≈ 1.8 J.
    """
    t = np.arange(-0.5, 2.5, 0.02)
    p = np.where((t >= 0) & (t < 0.2), 300.0, np.where((t >= 0.2) & (t < 2.0), 120.0, 40.0))
    tr = trace_of(t, p, "instant")
    e = tr.energy([0.0, 0.2], [0.2, 2.0])["gpu"]
    assert e[0] == pytest.approx(60.0, abs=1.8 + 3.0)  # + the 40→300 W edge at t=0
    assert e[1] == pytest.approx(216.0, abs=1.8 + 1.6)
    assert e.sum() == pytest.approx(276.0, abs=5.0)


def test_several_devices_and_a_gap_in_the_samples() -> None:
    gpu = trace_of(np.array([0.0, 1.0, 2.0]), np.array([100.0, 100.0, 100.0]), "instant")
    rows = frame(
        [
            {"t_s": 0.0, "device": "cpu", "power_w": None, "interpolation": "interval"},
            {"t_s": 1.0, "device": "cpu", "power_w": None, "interpolation": "interval"},
            {"t_s": 2.0, "device": "cpu", "power_w": 30.0, "interpolation": "interval"},
        ]
    )
    both = PowerTrace.concat([gpu, PowerTrace(rows)])
    assert both.devices == ["cpu", "gpu"]
    # the missing cpu sample at t=1 is merged into the next interval: 30 W over (0, 2]
    assert both.energy([0.0], [2.0])["cpu"] == pytest.approx([60.0])
    assert both.total_energy([0.0], [2.0]) == pytest.approx(260.0)


def test_mixed_interpolations_of_one_device_are_refused() -> None:
    rows = frame(
        [
            {"t_s": 0.0, "device": "x", "power_w": 1.0, "interpolation": "instant"},
            {"t_s": 1.0, "device": "x", "power_w": 1.0, "interpolation": "interval"},
        ]
    )
    with pytest.raises(ValueError, match="mixes interpolations"):
        PowerTrace(rows).energy([0.0], [1.0])


def test_save_load_and_shift(tmp_path: Path) -> None:
    tr = trace_of(np.array([10.0, 11.0]), np.array([5.0, 7.0]), "instant").shifted(10.0)
    tr.save(tmp_path / "t.parquet")
    back = PowerTrace.load(tmp_path / "t.parquet")
    assert back.samples["t_s"].to_list() == [0.0, 1.0]
    assert back.total_energy([0.0], [1.0]) == pytest.approx(6.0)
