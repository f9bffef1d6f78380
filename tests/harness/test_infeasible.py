"""Points that do not fit become `infeasible` records; the study and its figures go on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import bench_fp32_cpu, make_record
from joulebench.cli import main
from joulebench.energy.estimate import CpuEstimateMeter
from joulebench.harness import bench
from joulebench.harness.memory import (
    InfeasibleError,
    MemoryNeed,
    check_fits,
    estimate_need,
    is_out_of_memory,
)
from joulebench.models.precisions import get_precision
from joulebench.models.shapes import architecture
from joulebench.results import analysis, plots
from joulebench.study.specs import BenchSpec

MEASURE = {
    "meter": "estimate",
    "warmup_runs": 0,
    "repetitions": 2,
    "min_window_s": 0.0,
    "cooldown_s": 0.0,
    "seed": 0,
    "threads": 0,
    "memory_guard": False,
    "cpu_estimate": {"idle_w": 1.0, "tdp_w": 2.0},
    "idle_s": 0,
}


class OomEngine:
    """A fake engine that runs out of memory above batch 4, like a GPU would."""

    name = "fake"
    device = "cpu"
    precision = get_precision("fp32")

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def load(self) -> None: ...
    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> Any:
        return None

    def generate(self, inputs: Any, new_tokens: int, on_first_token: Any = None) -> list[int]:
        if self.batch > 4:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if on_first_token:
            on_first_token()
        return [new_tokens] * self.batch

    def synchronize(self) -> None: ...
    def reset_peak_memory(self) -> None: ...
    def peak_memory(self) -> dict[str, Any]:
        return {"bytes": 1, "kind": "fake"}

    def describe(self) -> dict[str, Any]:
        return {"engine": "fake", "device": "cpu"}


@pytest.mark.parametrize(("batch", "status"), [(2, "ok"), (16, "infeasible")])
def test_oom_becomes_an_infeasible_record(
    monkeypatch: pytest.MonkeyPatch, batch: int, status: str
) -> None:
    monkeypatch.setattr(bench, "make_engine", lambda *a, **k: OomEngine(batch))
    spec = BenchSpec("s", "m", "fake", "fp32", "cpu", batch, 8, 4, MEASURE)
    rec = bench.run(spec, "unused", progress=False)
    assert rec["status"] == status
    if status == "infeasible":
        assert "out of memory" in rec["reason"]
        assert rec["runs"] == []
        assert rec["provenance"]["packages"]["torch"]
    else:
        assert len(rec["runs"]) == 6


def test_other_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(OomEngine):
        def generate(self, inputs: Any, new_tokens: int, on_first_token: Any = None) -> list[int]:
            raise ValueError("a real bug")

    monkeypatch.setattr(bench, "make_engine", lambda *a, **k: Broken(1))
    with pytest.raises(ValueError, match="a real bug"):
        bench.run(BenchSpec("s", "m", "fake", "fp32", "cpu", 1, 8, 4, MEASURE), "x", progress=False)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (MemoryError(), True),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1e12"),
            True,
        ),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_classification(err: BaseException, expected: bool) -> None:
    assert is_out_of_memory(err) is expected


def test_guard_estimates_a_real_shape(tmp_path: Path) -> None:
    arch = {k: v for k, v in architecture("llama-3.1-8b").items() if k != "dtype"}
    (tmp_path / "config.json").write_text(json.dumps(arch))
    need = estimate_need(tmp_path, 16 * 10**9, 2, batch=128, input_len=2048, out_len=2048)
    # KV cache of Llama-3.1-8B: 128 KiB per token in bf16
    assert need.kv_cache == 128 * 4096 * 2 * 32 * 8 * 128 * 2  # 64 GiB
    with pytest.raises(InfeasibleError, match=r"needs at least .* GiB on cuda .* 80.00 GiB"):
        check_fits(need, 80 * 1024**3, "cuda")
    check_fits(MemoryNeed(10, 10, 10), 1000, "cpu")


def test_cli_records_a_point_that_cannot_fit(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main(
        [
            *bench_fp32_cpu(tiny_model),
            "--batch-size",
            "4000000",
            "--input-len",
            "1000",
            "--output-len",
            "8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["status"] == "infeasible"
    assert "GiB available" in rec["reason"]


def test_infeasible_points_are_listed_and_missing_from_figures(tmp_path: Path) -> None:
    reps = [
        {"pe": 1.0, "pt": 0.1, "fe": 11.0, "ft": 1.1},
        {"pe": 1.1, "pt": 0.1, "fe": 12.0, "ft": 1.2},
    ]
    ok = [make_record("fp32", b, reps) for b in (1, 4)]
    bad = make_record("fp32", 64, [])
    bad |= {"status": "infeasible", "reason": "needs 90 GiB", "runs": []}
    records = [*ok, bad]
    summary = analysis.summarize(analysis.measurements(records), 0.95, analysis.infeasible(records))
    rows = summary.filter(batch_size=64)
    assert rows.height == 3
    assert set(rows["status"]) == {"infeasible"}
    assert rows["energy_j_mean"].is_null().all()
    assert rows["reason"][0] == "needs 90 GiB"
    assert summary.filter(status="ok").height == 6
    for name, figure in plots.FIGURES.items():
        html, *_ = plots.save(figure(summary), tmp_path / name)
        assert '"batch_size": 64' not in html.read_text()
    assert pl.Series(summary["j_per_token_mean"]).null_count() == 3


def test_estimate_meter_never_reads_more_than_every_core() -> None:
    """A window that sees more CPU time than its cores could give reads tdp_w, not more.

    A child burns 0.3 s of CPU and exits; it is reaped inside a window of a few ms, so its CPU
    time lands in that window at once (children's times count when they are waited for).
    """
    import subprocess
    import sys
    import time

    import psutil

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    watched = psutil.Process(child.pid)
    while watched.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    meter = CpuEstimateMeter(idle_w=5.0, tdp_w=45.0, cores=1)
    before = psutil.Process().cpu_times()
    meter.begin_window("w")
    child.wait()
    m = meter.end_window("w")
    after = psutil.Process().cpu_times()
    busy = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    assert busy > 2 * m.time_s  # the window really saw more CPU than its one core could give
    assert m.avg_power_w == pytest.approx(45.0)
