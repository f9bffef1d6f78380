"""RAPL through a fake powercap tree: domains, windows, wraparound, permissions, null object."""

from __future__ import annotations

import pathlib
import time
from pathlib import Path

import numpy as np
import pytest
from fakehw import LivePowercap, SquareWave
from joulebench.core.errors import MeterError
from joulebench.energy import rapl
from joulebench.energy.meters import make_meter
from joulebench.energy.rapl import RaplMeter

MAX_UJ = 262_143_328_850


def make_tree(root: Path, packages: int = 2, dram: bool = True) -> Path:
    """A powercap tree like a two-socket server's (domains appear as entries of the root)."""

    def domain(name: str, label: str, energy: int = 1_000_000) -> None:
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(label + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")

    for p in range(packages):
        domain(f"intel-rapl:{p}", f"package-{p}")
        domain(f"intel-rapl:{p}:0", "core")
        if dram:
            domain(f"intel-rapl:{p}:1", "dram")
    domain("intel-rapl-mmio:0", "package-0")  # another interface: not read
    return root


def set_uj(root: Path, name: str, value: int) -> None:
    (root / name / "energy_uj").write_text(f"{value}\n")


def test_discovers_packages_and_dram_only(tmp_path: Path) -> None:
    domains = rapl.discover(make_tree(tmp_path))
    assert [d.key for d in domains] == [
        "rapl:dram-0",
        "rapl:dram-1",
        "rapl:package-0",
        "rapl:package-1",
    ]
    assert all(d.max_uj == MAX_UJ for d in domains)


def test_window_is_the_counter_delta_per_domain(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    with RaplMeter(root) as meter:
        meter.begin_window("w")
        set_uj(root, "intel-rapl:0", 1_000_000 + 25_500_000)  # +25.5 J
        set_uj(root, "intel-rapl:0:1", 1_000_000 + 4_000_000)  # +4 J
        m = meter.end_window("w")
    assert m.source == "rapl"
    assert m.energy_j == {
        "rapl:dram-0": 4.0,
        "rapl:dram-1": 0.0,
        "rapl:package-0": 25.5,
        "rapl:package-1": 0.0,
    }
    assert m.sources["rapl:package-0"] == "rapl"


def test_wraparound_is_added_back(tmp_path: Path) -> None:
    root = make_tree(tmp_path, packages=1, dram=False)
    set_uj(root, "intel-rapl:0", MAX_UJ - 1_000_000)  # 1 J before the wrap
    with RaplMeter(root) as meter:
        meter.begin_window("w")
        set_uj(root, "intel-rapl:0", 500_000)  # wrapped, then 0.5 J more
        m = meter.end_window("w")
        info = meter.describe()
    assert m.energy_j == {"rapl:package-0": pytest.approx(1.5)}
    assert info["domains"]["rapl:package-0"]["wraps"] == 1


def test_several_wraps_across_reads_are_all_counted(tmp_path: Path) -> None:
    root = make_tree(tmp_path, packages=1, dram=False)
    (domain,) = rapl.discover(root)
    start = domain.read_j()
    total = 0
    value = 1_000_000
    for _ in range(3):  # three reads, each after (almost) a full range: three wraps
        value = (value + MAX_UJ - 10) % MAX_UJ
        total += MAX_UJ - 10
        set_uj(root, "intel-rapl:0", value)
        domain.read_j()
    assert domain.read_j() - start == pytest.approx(total / 1e6)
    assert domain.wraps == 3


def test_unreadable_counter_names_the_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path)
    real = pathlib.Path.read_text

    def denied(self: Path, *a, **k) -> str:  # root can read anything: act out a normal user
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    with pytest.raises(MeterError) as err:
        RaplMeter(root)
    message = str(err.value)
    assert "intel-rapl:0" in message and "energy_uj" in message
    assert "permission denied" in message and "chmod a+r" in message
    assert not rapl.readable(root)
    # auto on a CPU job does not fail on it: it uses the labelled estimate
    assert make_meter("auto", "cpu", powercap_root=str(root)).source == "estimate"
    with pytest.raises(MeterError, match="permission denied"):
        make_meter("rapl", "cpu", powercap_root=str(root))


def test_no_rapl_is_a_null_meter_and_a_clear_error_when_asked_for(tmp_path: Path) -> None:
    with RaplMeter(tmp_path) as meter:
        assert not meter.available
        meter.begin_window("w")
        assert meter.end_window("w").energy_j == {}
        assert len(meter.trace()) == 0
    with pytest.raises(MeterError, match="no intel-rapl package or dram domain"):
        make_meter("rapl", "cpu", powercap_root=str(tmp_path))


def test_auto_on_a_cpu_job_prefers_readable_rapl(tmp_path: Path) -> None:
    root = make_tree(tmp_path, packages=1)
    meter = make_meter("auto", "cpu", powercap_root=str(root), sample_hz=50)
    try:
        assert meter.source == "rapl"
        assert meter.describe()["power_fields"] == {
            "rapl:dram-0": "energy_uj delta",
            "rapl:package-0": "energy_uj delta",
        }
    finally:
        meter.close()


def test_rapl_trace_is_power_from_counter_deltas(tmp_path: Path) -> None:
    root = make_tree(tmp_path, packages=1, dram=False)
    meter = RaplMeter(root)
    first = meter._sample(10.0)
    set_uj(root, "intel-rapl:0", 1_000_000 + 30_000_000)  # 30 J in 0.5 s
    second = meter._sample(10.5)
    assert first[0]["power_w"] is None
    assert second[0]["power_w"] == pytest.approx(60.0)
    assert second[0]["interpolation"] == "interval"


def test_live_tree_window_and_trace_against_the_known_energy(tmp_path: Path) -> None:
    """Counters advancing in real time: the window is the tree's energy, the trace conserves it."""
    package, dram = SquareWave(20.0, 60.0, 0.2), SquareWave(3.0, 5.0, 0.3)
    with LivePowercap(tmp_path, package, dram) as tree, RaplMeter(tmp_path, 100) as meter:
        meter.begin_window("w")
        time.sleep(0.5)
        m = meter.end_window("w")
        trace = meter.trace()
    # each domain's figure is the tree's exact energy between the two values the window read
    # (found in the tree's log of its writes, whose instants lie near the window's edges)
    assert m.total_j == pytest.approx(tree.window_j(m.energy_j, m.start_s, m.end_s), abs=4e-6)
    traced = trace.energy([m.start_s], [m.end_s])
    for key, joules in m.energy_j.items():
        t = trace.samples.filter(device=key)["t_s"].to_numpy()
        assert t.size >= 0.5 * (t[-1] - t[0]) * 100  # the sampler kept at least half its rate
        gap = float(np.diff(t).max())
        # the trace against the known power, not the window's reads: the counter deltas
        # telescope, so only the partial sample interval at each edge (one gap at most) and the
        # writer's lag behind the truth can differ
        profile = tree.profiles[key]
        truth = profile.between(m.start_s, m.end_s)
        assert traced[key][0] == pytest.approx(
            truth, abs=2 * profile.high_w * (gap + tree.max_gap_s)
        )
        assert traced[key][0] == pytest.approx(joules, abs=0.02 * joules + 0.01)
