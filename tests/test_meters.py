"""Meters: the CPU estimate's formula, NVML through a fake module, window bookkeeping."""

from __future__ import annotations

import time

import pytest
from conftest import FakeNvml
from joulebench import meters
from joulebench.errors import MeterError
from joulebench.meters import CpuEstimateMeter, Measurement, NvmlMeter, make_meter


def test_measurement_totals() -> None:
    m = Measurement(2.0, {"cuda:0": 100.0, "cuda:1": 50.0}, "nvml")
    assert m.total_j == 150.0
    assert m.avg_power_w == 75.0


def test_estimate_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = CpuEstimateMeter(idle_w=10.0, tdp_w=50.0, cores=4)
    cpu = iter([100.0, 103.0])  # 3 CPU-seconds used in the window
    clock = iter([1000.0, 1002.0])  # 2 s of wall time
    monkeypatch.setattr(meter, "_cpu_seconds", lambda: next(cpu))
    monkeypatch.setattr(meters.time, "perf_counter", lambda: next(clock))
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.source == "estimate"
    assert m.time_s == 2.0
    assert m.energy_j == {"cpu": pytest.approx(10.0 * 2 + 40.0 * 3 / 4)}


def test_estimate_counts_real_cpu_work() -> None:
    meter = CpuEstimateMeter(idle_w=0.0, tdp_w=20.0, cores=1)
    meter.begin_window("busy")
    start = time.process_time()
    while time.process_time() - start < 0.3:  # well above the 10 ms tick of CPU time
        pass
    busy = meter.end_window("busy")
    assert busy.total_j > 0
    assert busy.avg_power_w <= 20.0 + 1e-6


@pytest.mark.parametrize(("idle", "tdp"), [(50.0, 10.0), (-1.0, 10.0), (0.0, 0.0)])
def test_estimate_rejects_impossible_parameters(idle: float, tdp: float) -> None:
    with pytest.raises(MeterError, match="idle_w <= tdp_w"):
        CpuEstimateMeter(idle_w=idle, tdp_w=tdp)


def test_window_keys_are_checked() -> None:
    meter = CpuEstimateMeter()
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
    assert meters.visible_gpu_uuids(fake_nvml) == expected
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


def test_auto_meter_without_gpu_is_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meters, "_load_pynvml", lambda: None)
    assert make_meter("auto", "cpu").source == "estimate"
    assert make_meter("auto", "cuda").source == "estimate"
    with pytest.raises(MeterError, match="needs an NVIDIA GPU"):
        make_meter("nvml", "cpu")


def test_auto_meter_on_cuda_uses_nvml(monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml) -> None:
    monkeypatch.setattr(meters, "_load_pynvml", lambda: fake_nvml)
    assert make_meter("auto", "cuda").source == "nvml"
    assert make_meter("auto", "cpu").source == "estimate"


def test_real_pynvml_without_gpu_means_no_nvml() -> None:
    # On a machine without a driver nvmlInit raises NVMLError_LibraryNotFound: not an error.
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    assert meters._load_pynvml() is None


def test_unknown_meter_name() -> None:
    with pytest.raises(MeterError, match="unknown meter 'rapl2'"):
        make_meter("rapl2", "cpu")
