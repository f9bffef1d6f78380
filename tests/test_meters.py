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
        trace = meter.trace()
        info = meter.describe()
    assert m.sources == {"cuda:0": "nvml", "cuda:1": "nvml"}
    expected0 = 250.0 * (step - m.start_s) + 400.0 * (m.end_s - step)
    assert m.energy_j["cuda:0"] == pytest.approx(expected0, rel=0.01)
    traced = trace.energy([m.start_s], [m.end_s])
    for device, joules in m.energy_j.items():  # conservation: trace integral vs counter delta
        # the 150 W step falls between two samples: ≤ 150 W × one (possibly late) period / 2
        assert traced[device][0] == pytest.approx(joules, rel=0.05)
    s = trace.samples
    assert set(s["power_field"]) == {meters.POWER_INSTANT}
    assert s.filter(device="cuda:0")["power_w"].max() == 400.0
    assert s["sm_clock_mhz"].max() == 1980 and s["temperature_c"].max() == 41
    assert s["memory_used_mib"].max() == 2048
    assert s.height > 2 * 40  # ~100 Hz over ~0.55 s, two devices
    assert info["power_fields"] == {"cuda:0": meters.POWER_INSTANT, "cuda:1": meters.POWER_INSTANT}
    assert info["sample_hz"] == 100 and info["sampler_thread_cpu_s"] >= 0
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
    assert fields == [meters.POWER_INSTANT, meters.POWER_USAGE]
    assert trace.samples["power_w"].null_count() == 0  # no sample lost in the switch
    change = info["power_field_changes"][0]
    assert change["from"] == meters.POWER_INSTANT and change["to"] == meters.POWER_USAGE
    assert "3" in change["error"]  # NVML_ERROR_NOT_SUPPORTED
    assert m.energy_j["cuda:0"] == pytest.approx(200.0 * m.time_s, rel=0.01)


def test_every_power_reading_failing_leaves_gaps_not_numbers() -> None:
    nvml = live_nvml(200.0)
    with NvmlMeter(nvml, sample_hz=50) as meter:
        nvml.instant_supported = nvml.usage_supported = False
        time.sleep(0.1)
        info = meter.describe()
        trace = meter.trace()
    assert trace.samples["power_w"].null_count() >= 3
    assert info["devices"]["cuda:0"]["power_read_errors"] >= 3


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
    assert info["power_fields"] == {"cuda:0": meters.POWER_USAGE}
    assert info["devices"]["cuda:0"]["energy_counter"] is False


def test_gpu_without_counter_or_power_is_an_error() -> None:
    nvml = FakeNvml(["GPU-old"], counter=False)
    nvml.instant_supported = nvml.usage_supported = False
    with pytest.raises(MeterError, match=r"no NVML energy counter .* and no power reading"):
        NvmlMeter(nvml, sample_hz=20)


def test_sampler_errors_reach_the_caller() -> None:
    from joulebench.sampler import Sampler

    calls = []

    def read(t: float) -> list[dict]:
        calls.append(t)
        if len(calls) > 2:
            raise RuntimeError("sensor unplugged")
        return [{"device": "x", "power_w": 1.0, "interpolation": "instant"}]

    sampler = Sampler(read, 200)
    sampler.start()
    time.sleep(0.1)
    with pytest.raises(MeterError, match="sensor unplugged"):
        sampler.trace()
    with pytest.raises(MeterError, match="sensor unplugged"):
        sampler.stop()


def test_sampler_keeps_its_rate() -> None:
    from joulebench.sampler import Sampler

    sampler = Sampler(lambda t: [{"device": "x", "power_w": 1.0}], 50)
    sampler.start()
    time.sleep(0.5)
    sampler.stop()
    assert 15 <= sampler.ticks <= 26  # 50 Hz × 0.5 s; a busy CPU may make ticks late
    with pytest.raises(MeterError, match=r"\(0, 1000\] Hz"):
        Sampler(lambda t: [], 0)


def test_estimate_trace_models_cpu_load() -> None:
    # two cores: one busy thread is half the load, so no sample hits the cap (which would make
    # the per-sample trace and the per-window formula differ by construction)
    with CpuEstimateMeter(idle_w=10.0, tdp_w=50.0, cores=2, sample_hz=50) as meter:
        time.sleep(0.2)  # idle
        meter.begin_window("busy")
        start = time.process_time()
        while time.process_time() - start < 0.4:
            pass
        m = meter.end_window("busy")
        trace = meter.trace()
    s = trace.samples
    assert set(s["interpolation"]) == {"interval"} and set(s["source"]) == {"estimate"}
    assert s["power_w"].min() < 20.0 and s["power_w"].max() > 25.0  # idle vs one core busy
    traced = trace.energy([m.start_s], [m.end_s])["cpu"][0]
    assert traced == pytest.approx(m.total_j, rel=0.1)  # same model, sampled


# -- several meters at once --------------------------------------------------------------------


def test_meter_set_names_each_source(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = live_nvml(200.0)
    monkeypatch.setattr(meters, "_load_pynvml", lambda: nvml)
    meter = make_meter(["nvml", "estimate"], "cuda", sample_hz=50)
    try:
        assert meter.source == "nvml+estimate"
        meter.begin_window("w")
        time.sleep(0.1)
        m = meter.end_window("w")
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
        meters.meter_names(value)


def test_a_failing_meter_closes_the_ones_already_built(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = []
    monkeypatch.setattr(CpuEstimateMeter, "close", lambda self: closed.append(self))
    monkeypatch.setattr(meters, "_load_pynvml", lambda: None)
    with pytest.raises(MeterError, match="needs an NVIDIA GPU"):
        make_meter(["estimate", "nvml"], "cpu")
    assert len(closed) == 1
