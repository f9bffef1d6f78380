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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="run time per cell")
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 20.0, 100.0])
    args = ap.parse_args()
    print(f"{'sensor':<34}{'Hz':>6}{'samples':>9}{'CPU ms/s':>10}{'% core':>8}{'µs/sample':>11}")
    for name, build in sensors():
        for hz in args.rates:
            meter = build(hz)
            sampler = meter._sampler
            time.sleep(args.seconds)
            cpu = sampler.cpu_seconds()
            ticks = sampler.ticks
            meter.close()
            per_s = cpu / args.seconds
            print(
                f"{name:<34}{hz:>6g}{ticks:>9d}{per_s * 1e3:>10.3f}{per_s * 100:>8.3f}"
                f"{cpu / max(ticks, 1) * 1e6:>11.1f}"
            )
    print(f"({args.seconds:g} s per cell; CPU time of the sampling thread only)")


if __name__ == "__main__":
    main()
