"""Meters: the CPU estimate's formula, NVML through a fake module, window bookkeeping.

Timing: no assertion depends on how fast this machine runs. Clocks and CPU time are injected
where a test checks a formula; where real threads run, bounds come from what was measured
(the sampler's own tick count and elapsed time, the gap between the samples around a step).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fakehw import EDGE_S, FakeNvml
from joulebench.core.errors import MeterError
from joulebench.energy import choice
from joulebench.energy import nvml as jnvml
from joulebench.energy.base import Measurement
from joulebench.energy.estimate import CpuEstimateMeter, ProcessTree, ThisProcess, interval_cpu
from joulebench.energy.meters import make_meter
from joulebench.energy.nvml import NvmlMeter
from joulebench.energy.sampler import Sampler


def test_measurement_totals() -> None:
    m = Measurement(2.0, {"cuda:0": 100.0, "cuda:1": 50.0}, "nvml")
    assert m.total_j == 150.0
    assert m.avg_power_w == 75.0


class FakeCpu:
    """CPU seconds the test sets (a CpuTime source)."""

    def __init__(self, *values: float) -> None:
        self.values = iter(values)

    def cpu_seconds(self) -> float:
        return next(self.values)

    def describe(self) -> str:
        return "fake"


def test_estimate_formula() -> None:
    cpu = FakeCpu(100.0, 103.0)  # 3 CPU-seconds used in the window
    clock = iter([1000.0, 1002.0])  # 2 s of wall time
    meter = CpuEstimateMeter(idle_w=10.0, tdp_w=50.0, cores=4, cpu=cpu, clock=lambda: next(clock))
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.source == "estimate"
    assert m.time_s == 2.0
    assert m.energy_j == {"cpu": pytest.approx(10.0 * 2 + 40.0 * 3 / 4)}


def test_a_trace_interval_credited_beyond_its_cores_passes_the_rest_on() -> None:
    """CPU time comes in 10 ms ticks: 80 ms read over a 50 ms interval of one core is 50 ms
    there and 30 ms owed to the next; over both, the 100 ms really used (not 50 + 20)."""
    used, carry = interval_cpu(0.08, 0.05, 1, 0.0)
    assert (used, carry) == (pytest.approx(0.05), pytest.approx(0.03))
    used, carry = interval_cpu(0.02, 0.05, 1, carry)
    assert (used, carry) == (pytest.approx(0.05), pytest.approx(0.0))
    assert interval_cpu(-0.01, 0.05, 2, 0.0) == (0.0, 0.0)  # a tree that lost a process


def test_estimate_counts_real_cpu_work() -> None:
    # idle_w = 0: every joule comes from CPU time, so the window must hold what we burnt
    meter = CpuEstimateMeter(idle_w=0.0, tdp_w=20.0, cores=1)
    assert isinstance(meter.cpu, ThisProcess)
    meter.begin_window("busy")
    start = time.process_time()
    while time.process_time() - start < 0.3:  # well above the 10 ms tick of CPU time
        pass
    burnt = time.process_time() - start
    busy = meter.end_window("busy")
    # 20 W per busy core; CPU time moves in 10 ms ticks (one at each edge), capped at one core
    assert busy.total_j == pytest.approx(min(20.0 * burnt, 20.0 * busy.time_s), abs=20.0 * 0.02)


@pytest.mark.parametrize(("idle", "tdp"), [(50.0, 10.0), (-1.0, 10.0), (0.0, 0.0)])
def test_estimate_rejects_impossible_parameters(idle: float, tdp: float) -> None:
    with pytest.raises(MeterError, match="idle_w <= tdp_w"):
        CpuEstimateMeter(idle_w=idle, tdp_w=tdp)


def test_window_keys_are_checked() -> None:
    meter = CpuEstimateMeter()
    meter.begin_window("a")
    meter.cancel_window("a")  # closed without a reading, and the key free again
    with pytest.raises(MeterError, match="'a' was never opened"):
        meter.cancel_window("a")
    meter.begin_window("a")
    with pytest.raises(MeterError, match="'a' is already open"):
        meter.begin_window("a")
    with pytest.raises(MeterError, match="'b' was never opened"):
        meter.end_window("b")
    meter.begin_window("b")  # several windows may be open at once
    meter.end_window("a")
    meter.end_window("b")


def test_nvml_energy_is_counter_delta_per_device(fake_nvml: FakeNvml) -> None:
    syncs: list[int] = []
    meter = NvmlMeter(fake_nvml, synchronize=lambda: syncs.append(1))
    meter.begin_window("w")
    fake_nvml.energy_mj[0] += 2_500  # 2.5 J
    fake_nvml.energy_mj[1] += 10_000  # 10 J
    m = meter.end_window("w")
    assert m.energy_j == {"cuda:0": 2.5, "cuda:1": 10.0}
    assert m.total_j == 12.5
    assert m.source == "nvml"
    assert len(syncs) == 2  # the device is synchronised at both edges
    info = meter.describe()
    assert info["devices"]["cuda:1"]["uuid"] == "GPU-bbbb-1111"
    assert info["devices"]["cuda:0"]["power_limit_w"] == 700.0
    meter.close()
    assert fake_nvml.shutdown


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1", ["GPU-bbbb-1111"]),
        ("GPU-bbbb", ["GPU-bbbb-1111"]),
        ("1,0", ["GPU-bbbb-1111", "GPU-aaaa-0000"]),
    ],
)
def test_cuda_visible_devices_maps_to_uuids(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert jnvml.visible_gpu_uuids(fake_nvml) == expected
    meter = NvmlMeter(fake_nvml)
    meter.begin_window("w")
    fake_nvml.energy_mj[1] += 1000
    assert meter.end_window("w").energy_j["cuda:0"] == 1.0  # framework index 0 = first visible


def test_cuda_visible_devices_unknown_gpu(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with pytest.raises(MeterError, match="names GPU 7; NVML sees 2"):
        NvmlMeter(fake_nvml)


def test_gpu_without_energy_counter_is_a_clear_error() -> None:
    with pytest.raises(MeterError, match="no NVML energy counter"):
        NvmlMeter(FakeNvml(["GPU-old"], counter=False))


def test_auto_meter_without_gpu_is_the_estimate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: None)
    # an empty powercap root: no RAPL whatever this host has under /sys/class/powercap
    assert make_meter("auto", "cpu", powercap_root=str(tmp_path)).source == "estimate"
    assert make_meter("auto", "cuda", powercap_root=str(tmp_path)).source == "estimate"
    with pytest.raises(MeterError, match="needs an NVIDIA GPU"):
        make_meter("nvml", "cpu")


def test_auto_meter_on_cuda_uses_nvml(
    monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: fake_nvml)
    assert make_meter("auto", "cuda", powercap_root=str(tmp_path)).source == "nvml"
    assert make_meter("auto", "cpu", powercap_root=str(tmp_path)).source == "estimate"


def test_real_pynvml_without_gpu_means_no_nvml(caplog: pytest.LogCaptureFixture) -> None:
    # On a machine without a driver nvmlInit raises NVMLError_LibraryNotFound: not an error.
    import shutil

    import pynvml  # noqa: F401  (a dependency: missing, it fails here, not in the ImportError branch)

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    caplog.set_level("DEBUG", logger=jnvml.__name__)
    assert jnvml.load_pynvml() is None
    assert "NVML unavailable" in caplog.text  # the nvmlInit branch ran, not the ImportError one


def test_unknown_meter_name() -> None:
    with pytest.raises(MeterError, match="unknown meter 'rapl2'"):
        make_meter("rapl2", "cpu")


# -- the power trace and NVML's failure modes --------------------------------------------------


def live_nvml(*watts: float) -> FakeNvml:
    return FakeNvml([f"GPU-{i:04d}" for i in range(len(watts))], power_w=list(watts), live=True)


def test_nvml_trace_agrees_with_the_counter() -> None:
    nvml = live_nvml(250.0, 100.0)
    with NvmlMeter(nvml, sample_hz=100) as meter:
        time.sleep(0.05)
        meter.begin_window("w")
        time.sleep(0.3)
        step = time.perf_counter()
        nvml.set_power(0, 400.0)  # a step inside the window
        time.sleep(0.2)
        m = meter.end_window("w")
    trace = meter.trace()  # after close: the sampler has stopped, so trace and counts agree
    info = meter.describe()
    assert m.sources == {"cuda:0": "nvml", "cuda:1": "nvml"}
    # the counter's delta is the devices' exact energy between the two reads the window used
    # (found in the fake's log; whole mJ), 250 W then 400 W from the step on for cuda:0
    for i in (0, 1):
        exact = nvml.window_j(i, m.energy_j[f"cuda:{i}"], m.start_s, m.end_s)
        assert m.energy_j[f"cuda:{i}"] == pytest.approx(exact, abs=0.002)
    assert nvml.power_log[0][1] == (pytest.approx(step, abs=0.01), 400.0)  # the step, inside
    traced = trace.energy([m.start_s], [m.end_s])
    s = trace.samples
    t0 = s.filter(device="cuda:0")["t_s"].to_numpy()
    # the sampler kept at least half its rate before its gaps serve as a tolerance
    assert t0.size >= 0.5 * (t0[-1] - t0[0]) * 100
    gap = t0[t0 > step].min() - t0[t0 <= step].max()  # the samples around the step, as taken
    # conservation: trace integral vs counter delta; the line between the samples around the
    # 150 W step is off by at most 150 W × that gap / 2 (+ 1% for the counter's mJ and edges)
    assert traced["cuda:0"][0] == pytest.approx(m.energy_j["cuda:0"], abs=150 * gap / 2 + 2.0)
    assert traced["cuda:1"][0] == pytest.approx(m.energy_j["cuda:1"], rel=0.01)
    assert set(s["power_field"]) == {jnvml.POWER_INSTANT}
    assert s.filter(device="cuda:0")["power_w"].max() == 400.0
    assert s["sm_clock_mhz"].max() == 1980 and s["temperature_c"].max() == 41
    assert s["memory_used_mib"].max() == 2048
    # one row per device per sample: the ticks, the first sample, the window edges, the last
    per_device = s.filter(device="cuda:0").height
    assert per_device == s.filter(device="cuda:1").height == info["samples"] + 4
    assert info["samples"] >= 1  # the thread sampled (edges alone would give 4 rows)
    assert info["power_fields"] == {"cuda:0": jnvml.POWER_INSTANT, "cuda:1": jnvml.POWER_INSTANT}
    assert info["sample_hz"] == 100 and info["sampler_thread_cpu_s"] > 0
    assert nvml.shutdown


def test_instant_power_not_supported_mid_run_falls_back_and_says_so() -> None:
    nvml = live_nvml(200.0)
    with NvmlMeter(nvml, sample_hz=100) as meter:
        meter.begin_window("w")
        time.sleep(0.1)
        nvml.instant_supported = False  # NVML_ERROR_NOT_SUPPORTED from now on
        time.sleep(0.1)
        m = meter.end_window("w")
        trace = meter.trace()
        info = meter.describe()
    fields = trace.samples["power_field"].unique(maintain_order=True).to_list()
    assert fields == [jnvml.POWER_INSTANT, jnvml.POWER_USAGE]
    assert trace.samples["power_w"].null_count() == 0  # no sample lost in the switch
    change = info["power_field_changes"][0]
    assert change["from"] == jnvml.POWER_INSTANT and change["to"] == jnvml.POWER_USAGE
    assert "3" in change["error"]  # NVML_ERROR_NOT_SUPPORTED
    # 200 W throughout: exactly that between the window's two counter reads (whole mJ)
    exact = nvml.window_j(0, m.energy_j["cuda:0"], m.start_s, m.end_s)
    assert m.energy_j["cuda:0"] == pytest.approx(exact, abs=0.002)
    assert exact == pytest.approx(200.0 * m.time_s, abs=200.0 * EDGE_S)  # (not 0, not all time)


def test_every_power_reading_failing_leaves_gaps_not_numbers() -> None:
    nvml = live_nvml(200.0)
    with NvmlMeter(nvml, sample_hz=50) as meter:
        nvml.instant_supported = nvml.usage_supported = False
        off = time.perf_counter()  # every sample stamped after this read a failing NVML
        time.sleep(0.1)
    trace = meter.trace()  # after close: the last sample (at stop) fell after the switch
    info = meter.describe()
    s = trace.samples
    after = s.filter(pl.col("t_s") > off)
    assert after.height >= 1 and after["power_w"].null_count() == after.height
    assert s["power_w"][0] == 200.0  # the first sample, before the switch, has its number
    # every failed reading is one gap in the trace and one counted error, no more, no less
    assert info["devices"]["cuda:0"]["power_read_errors"] == s["power_w"].null_count()


def test_counter_failing_mid_run_integrates_the_trace_labelled() -> None:
    nvml = live_nvml(300.0)
    with NvmlMeter(nvml, sample_hz=100) as meter:
        meter.begin_window("w")
        time.sleep(0.1)
        nvml.counter = False
        time.sleep(0.1)
        m = meter.end_window("w")
        info = meter.describe()
    assert m.sources == {"cuda:0": "nvml-trace"}
    assert m.energy_j["cuda:0"] == pytest.approx(300.0 * m.time_s, rel=0.03)
    assert info["sources"] == {"cuda:0": "nvml-trace"}


def test_gpu_without_counter_is_measured_from_its_trace() -> None:
    nvml = FakeNvml(["GPU-old"], counter=False, power_w=[120.0])
    nvml.instant_supported = False  # an old GPU: only the averaged power reading
    with NvmlMeter(nvml, sample_hz=100) as meter:
        meter.begin_window("w")
        time.sleep(0.2)
        m = meter.end_window("w")
        info = meter.describe()
    assert m.sources == {"cuda:0": "nvml-trace"}
    assert m.energy_j["cuda:0"] == pytest.approx(120.0 * m.time_s, rel=0.02)
    assert info["power_fields"] == {"cuda:0": jnvml.POWER_USAGE}
    assert info["devices"]["cuda:0"]["energy_counter"] is False


def test_gpu_without_counter_or_power_is_an_error() -> None:
    nvml = FakeNvml(["GPU-old"], counter=False)
    nvml.instant_supported = nvml.usage_supported = False
    with pytest.raises(MeterError, match=r"no NVML energy counter .* and no power reading"):
        NvmlMeter(nvml, sample_hz=20)


def test_sampler_errors_reach_the_caller() -> None:
    import threading

    def read(t: float) -> list[dict]:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("sensor unplugged")  # the thread's first read fails
        return [{"device": "x", "power_w": 1.0, "interpolation": "instant"}]

    sampler = Sampler(read, 200)
    sampler.start()
    deadline = time.monotonic() + 30
    while sampler.running:  # the thread ends on its error, however slowly it gets there
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(MeterError, match="sensor unplugged"):
        sampler.trace()
    with pytest.raises(MeterError, match="sensor unplugged"):
        sampler.stop()


def test_sampler_keeps_its_grid() -> None:
    reads: list[float] = []

    def read(t: float) -> list[dict]:
        reads.append(t)
        return [{"device": "x", "power_w": 1.0}]

    sampler = Sampler(read, 50)
    sampler.start()
    time.sleep(0.5)
    asked = time.perf_counter()
    sampler.stop()
    stopped = time.perf_counter()
    # every grid point from start to the moment stop was asked was either taken or counted
    # late (never caught up), however loaded the machine; none after it was taken
    assert asked <= sampler.stopped_s <= stopped
    grid = int((sampler.stopped_s - sampler.started_s) * 50)
    assert sampler.ticks + sampler.late_ticks == grid
    assert sampler.ticks >= 1  # it sampled, not only booked ticks as late
    # one read at start, one per tick, one at stop: the trace holds them all
    assert len(reads) == len(sampler.trace().samples) == sampler.ticks + 2
    with pytest.raises(MeterError, match=r"\(0, 1000\] Hz"):
        Sampler(lambda t: [], 0)


class BusyFrom:
    """CPU time of one busy core from ``at`` on (clock time), none before: a known load."""

    def __init__(self, at: float) -> None:
        self.at = at

    def cpu_seconds(self) -> float:
        return max(0.0, time.perf_counter() - self.at)

    def describe(self) -> str:
        return "one core busy from a known time"


def test_estimate_trace_models_cpu_load() -> None:
    # two cores, one busy from `at`: 10 W before, 10 + 40 · 1/2 = 30 W after, whatever the speed
    at = time.perf_counter() + 0.1
    cpu = BusyFrom(at)
    with CpuEstimateMeter(idle_w=10.0, tdp_w=50.0, cores=2, sample_hz=50, cpu=cpu) as meter:
        time.sleep(0.2)
        meter.begin_window("busy")
        time.sleep(0.2)
        m = meter.end_window("busy")
        trace = meter.trace()
    s = trace.samples
    assert set(s["interpolation"]) == {"interval"} and set(s["source"]) == {"estimate"}
    t, p = s["t_s"].to_numpy(), s["power_w"].to_numpy()
    before = (t[1:] <= at) & (t[:-1] >= t[0])
    after = t[:-1] >= at
    assert before.any() and after.any()
    # CPU time is read just after each sample's timestamp, so single samples wobble by that
    # lag; the typical sample does not, and over many samples the lags cancel (telescoping)
    assert np.median(p[1:][before]) == pytest.approx(10.0, abs=0.5)
    assert np.median(p[1:][after]) == pytest.approx(30.0, abs=0.5)
    first_after = t[:-1][after][0]
    assert trace.energy([first_after], [t[-1]])["cpu"][0] == pytest.approx(
        30.0 * (t[-1] - first_after), rel=0.02
    )
    expected = 10.0 * m.time_s + 20.0 * (m.end_s - max(m.start_s, at))
    assert m.total_j == pytest.approx(expected, rel=0.02)
    traced = trace.energy([m.start_s], [m.end_s])["cpu"][0]
    assert traced == pytest.approx(expected, rel=0.02)  # the known load, not the window's figure
    assert traced == pytest.approx(m.total_j, rel=1e-3)  # same model, sampled at the edges


def test_estimate_of_a_process_tree_counts_its_children() -> None:
    import os
    import signal
    import subprocess
    import sys

    busy = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", busy], start_new_session=True)
    try:
        tree = ProcessTree(proc.pid, refresh_s=0.0)
        deadline = time.monotonic() + 30
        while len(tree._processes()) < 2:  # the busy grandchild has started
            assert time.monotonic() < deadline
            time.sleep(0.05)
        meter = CpuEstimateMeter(idle_w=0.0, tdp_w=20.0, pid=proc.pid)
        c0 = tree.cpu_seconds()
        meter.begin_window("w")
        time.sleep(0.5)
        m = meter.end_window("w")
        burnt = tree.cpu_seconds() - c0  # what the tree used, read beside the meter
        assert m.source == "estimate" and "process tree" in meter.describe()["processes"]
        # the meter reads the same tree: 20 W × its CPU seconds / cores (ticks of 10 ms apart)
        assert m.total_j == pytest.approx(20.0 * burnt / meter.cores, abs=20.0 * 0.03)
        assert burnt > 0.05  # the grandchild was counted (this process slept meanwhile)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- several meters at once --------------------------------------------------------------------


def test_meter_set_names_each_source(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = live_nvml(200.0)
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: gpu)
    meter = make_meter(["nvml", "estimate"], "cuda", sample_hz=50)
    try:
        assert meter.source == "nvml+estimate"
        meter.begin_window("w")
        time.sleep(0.1)
        m = meter.end_window("w")
        meter.begin_window("x")
        meter.cancel_window("x")  # on every meter of the set
        trace = meter.trace()
        info = meter.describe()
    finally:
        meter.close()
    assert m.sources == {"cuda:0": "nvml", "cpu": "estimate"}
    assert set(m.energy_j) == {"cuda:0", "cpu"}
    assert m.total_j == pytest.approx(m.energy_j["cuda:0"] + m.energy_j["cpu"])
    assert trace.devices == ["cpu", "cuda:0"]
    assert info["sources"] == {"cuda:0": "nvml", "cpu": "estimate"}
    assert [p["source"] for p in info["meters"]] == ["nvml", "estimate"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["auto", "nvml"], "'auto' picks the meters itself"),
        (["rapl", "estimate"], "both give the CPU's energy"),
        (["nvml", "nvml"], "listed twice"),
        ([], "non-empty list"),
        (["nvml", "zeus"], "unknown meter 'zeus'; allowed: auto, nvml, rapl, estimate"),
    ],
)
def test_meter_lists_are_checked(value: list[str], message: str) -> None:
    with pytest.raises(MeterError, match=message):
        choice.meter_names(value)


def test_a_failing_meter_closes_the_ones_already_built(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = []
    monkeypatch.setattr(CpuEstimateMeter, "close", lambda self: closed.append(self))
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: None)
    with pytest.raises(MeterError, match="needs an NVIDIA GPU"):
        make_meter(["estimate", "nvml"], "cpu")
    assert len(closed) == 1


def test_auto_meter_on_an_auto_device(
    monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml, tmp_path
) -> None:
    # a serving session on `device: auto`: NVML where a GPU is visible, else the CPU's meter
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: fake_nvml)
    assert choice.resolve("auto", "auto", str(tmp_path)) == ["nvml"]
    monkeypatch.setattr(jnvml, "load_pynvml", lambda: None)
    assert choice.resolve("auto", "auto", str(tmp_path)) == ["estimate"]  # no RAPL there
    assert choice.resolve(["nvml", "rapl"], "cpu") == ["nvml", "rapl"]  # lists are as given
