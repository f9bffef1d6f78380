"""Sampler overhead: CPU time the background power sampler costs per second, at 10/20/100 Hz.

For each sensor, a meter with its sampler runs while this thread sleeps; the sampler thread's
own CPU clock (``pthread_getcpuclockid``) says what it cost. Sensors:

- ``estimate``: process CPU time via psutil (what the default CPU study samples);
- ``nvml``: the real NVML when a GPU is visible — otherwise a Python stand-in module
  (tests/conftest.py's FakeNvml) that measures only joulebench's side of each sample
  (the driver's own cost per call is then missing, and the row says so);
- ``rapl``: the real powercap tree when readable, else skipped.

    .venv/bin/python tests/perf/sampler_overhead.py [--seconds 3] [--rates 10 20 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulebench.energy import estimate, nvml, rapl
from perfkit import Figure, OthersCpu, report


def sensors() -> list[tuple[str, Callable[[float], Any]]]:
    out: list[tuple[str, Callable[[float], Any]]] = [
        ("estimate (psutil)", lambda hz: estimate.CpuEstimateMeter(sample_hz=hz))
    ]
    if nvml.load_pynvml() is not None:
        out.append(("nvml (real driver)", lambda hz: nvml.NvmlMeter(None, sample_hz=hz)))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from fakehw import FakeNvml  # a stand-in: no driver here

        def fake(hz: float) -> nvml.NvmlMeter:
            return nvml.NvmlMeter(FakeNvml(["GPU-0"], power_w=[300.0], live=True), sample_hz=hz)

        out.append(("nvml (Python side only, no GPU)", fake))
    if rapl.readable():
        out.append(("rapl (real powercap)", lambda hz: rapl.RaplMeter(sample_hz=hz)))
    return out


#: Target: CPU time per sample of the sampling thread (0.5 ms is 1% of a core at 20 Hz).
MAX_US_PER_SAMPLE = 500.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="run time per cell")
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 20.0, 100.0])
    args = ap.parse_args()
    figures = []
    with OthersCpu() as others:
        for name, build in sensors():
            for hz in args.rates:
                meter = build(hz)
                sampler = meter._sampler
                time.sleep(args.seconds)
                cpu = sampler.cpu_seconds()
                ticks = sampler.ticks
                meter.close()
                share = cpu / args.seconds * 100
                figures.append(Figure(f"{name} {hz:g} Hz: % of a core", share, "%"))
                figures.append(
                    Figure(
                        f"{name} {hz:g} Hz: CPU per sample",
                        cpu / max(ticks, 1) * 1e6,
                        "µs",
                        MAX_US_PER_SAMPLE,
                    )
                )
    title = f"power sampler cost ({args.seconds:g} s per cell; CPU time of the sampling thread)"
    return report(title, figures, others)


if __name__ == "__main__":
    sys.exit(main())
