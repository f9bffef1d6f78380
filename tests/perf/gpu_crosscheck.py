"""The same benchmark windows measured at once by joulebench's NVML meter, Zeus and a reader in
another process: one table, exit 1 when they disagree.

For each batch size a 1B Llama (the workflow's ``results/models/llama-3.2-1b``) generates
``--output-len`` tokens per prompt from ``--input-len``-token prompts, as the study's benchmarks do,
repeated inside one window until it lasts each of ``--targets`` seconds (``--repeats`` windows
per target). Every window is measured at once by

- joulebench: ``make_meter("nvml", ...)`` (energy-counter delta, device synchronised at both
  edges), the meter every benchmark job uses;
- Zeus 0.16: ``ZeusMonitor.begin_window`` / ``end_window`` around joulebench's window (its own
  NVML reads and its own torch synchronisation);
- out of process: a second Python process (this file with ``--sample``) that reads the same
  GPU's ``nvmlDeviceGetTotalEnergyConsumption`` and power every ``1/--sample-hz`` s with its own
  NVML handle; the window's energy is its counter interpolated linearly at the window's edges
  (both processes stamp with CLOCK_MONOTONIC). Its power integral over the window is printed too,
  for information: the power field is a different sensor path, not held to the target.

Targets: the median difference of Zeus and of the out-of-process reader against joulebench
within ±2%, and no window of >= ``--min-target-s`` (1 s) beyond ±5%. Shorter windows are shown
and not held to them: the counter updates only every ~20-100 ms.

    python tests/perf/gpu_crosscheck.py --model-dir results/models/llama-3.2-1b --out OUT
    # dry run on a CPU (tests): fake NVML on PYTHONPATH, no Zeus
    python tests/perf/gpu_crosscheck.py --device cpu --zeus off --model-dir DIR --out OUT ...
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MEDIAN_PCT = 2.0
WINDOW_PCT = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=Path, help=argparse.SUPPRESS)  # the out-of-process reader
    ap.add_argument("--uuid", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.3, 1.0, 2.5])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--min-target-s", type=float, default=1.0)
    ap.add_argument("--sample-hz", type=float, default=100.0)
    ap.add_argument("--zeus", choices=["on", "off"], default="on")
    ap.add_argument("--out", type=Path, help="folder for crosscheck.csv")
    args = ap.parse_args(argv)
    if args.sample is None and (args.model_dir is None or args.out is None):
        ap.error("--model-dir and --out are required")
    return args


# -- the reader in another process ------------------------------------------------------------
def sample(path: Path, uuid: str, hz: float) -> int:
    """Append ``t,energy_j,power_w`` rows for GPU ``uuid`` until SIGTERM."""
    import pynvml

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    period = 1.0 / hz
    with path.open("w", buffering=1) as out:
        out.write("t,energy_j,power_w\n")
        next_t = time.perf_counter()
        while not stop:
            t = time.perf_counter()
            energy = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
            power = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            out.write(f"{t!r},{energy!r},{power!r}\n")
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
    pynvml.nvmlShutdown()
    return 0


def interpolate(ts: list[float], ys: list[float], t: float) -> float:
    """``ys`` at ``t``, linear between the two samples around it (``t`` inside ``ts``)."""
    if not ts or t < ts[0] or t > ts[-1]:
        raise ValueError(f"t={t} is outside the reader's samples [{ts[0]}, {ts[-1]}]")
    lo, hi = 0, len(ts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ts[mid] <= t else (lo, mid)
    if ts[hi] == ts[lo]:
        return ys[lo]
    return ys[lo] + (ys[hi] - ys[lo]) * (t - ts[lo]) / (ts[hi] - ts[lo])


def power_integral(ts: list[float], ps: list[float], a: float, b: float) -> float:
    """Trapezoid integral of power over [a, b], the edges interpolated."""
    points = [(a, interpolate(ts, ps, a))]
    points += [(t, p) for t, p in zip(ts, ps, strict=True) if a < t < b]
    points.append((b, interpolate(ts, ps, b)))
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points))


def pct(x: float, ref: float) -> float:
    return 100.0 * (x - ref) / ref if ref else math.nan


# -- the windows ------------------------------------------------------------------------------
def verdict(rows: list[dict[str, Any]], columns: list[str], min_s: float) -> list[str]:
    """One line per missed target (none: all met)."""
    misses = []
    for col in columns:
        diffs = [r[f"d_{col}_pct"] for r in rows if r["time_s"] >= min_s]
        if not diffs:
            misses.append(f"{col}: no window lasted >= {min_s:g} s")
            continue
        median = statistics.median(diffs)
        if abs(median) > MEDIAN_PCT:
            misses.append(f"{col}: median difference {median:+.2f}% is beyond ±{MEDIAN_PCT:g}%")
        worst = max(diffs, key=abs)
        if abs(worst) > WINDOW_PCT:
            misses.append(f"{col}: a >= {min_s:g} s window differs by {worst:+.2f}%")
    return misses


def print_table(rows: list[dict[str, Any]], zeus: bool) -> None:
    head = f"{'window':<16}{'s':>6}{'joulebench J':>14}"
    head += f"{'Zeus J':>11}{'Δ%':>7}" if zeus else f"{'Zeus J':>11}{'':>7}"
    head += f"{'other-proc J':>14}{'Δ%':>7}{'other-proc ∫P J':>17}{'Δ%':>7}"
    print(head)
    for r in rows:
        line = f"{r['window']:<16}{r['time_s']:>6.2f}{r['joulebench_j']:>14.2f}"
        if zeus:
            line += f"{r['zeus_j']:>11.2f}{r['d_zeus_pct']:>+7.2f}"
        else:
            line += f"{'—':>11}{'':>7}"
        line += f"{r['oop_j']:>14.2f}{r['d_oop_pct']:>+7.2f}"
        line += f"{r['oop_power_j']:>17.2f}{r['d_oop_power_pct']:>+7.2f}"
        print(line)


def zeus_energy(monitor: Any, key: str) -> float:
    """Zeus's energy of GPU 0 over window ``key`` (an error if Zeus did not measure that GPU)."""
    gpu_energy = monitor.end_window(key).gpu_energy
    if 0 not in gpu_energy:
        raise RuntimeError(f"Zeus measured no GPU 0 (it measured {sorted(gpu_energy)})")
    return float(gpu_energy[0])


def measure(args: argparse.Namespace) -> int:
    import torch
    from joulebench.energy.meters import make_meter
    from joulebench.energy.nvml import load_pynvml, visible_gpu_uuids
    from joulebench.harness.engines import make_engine

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing measured (this check needs one)")
        return 2
    nvml = load_pynvml()
    if nvml is None:
        print("NVML is not usable here: nothing measured")
        return 2
    uuid = visible_gpu_uuids(nvml)[0]
    args.out.mkdir(parents=True, exist_ok=True)
    samples = args.out / "crosscheck_samples.csv"
    engine = make_engine("transformers", str(args.model_dir), args.precision, args.device)
    engine.load()
    zeus_mon = None
    if args.zeus == "on":
        from zeus.monitor import ZeusMonitor

        zeus_mon = ZeusMonitor(gpu_indices=[0], cpu_indices=[], sync_execution_with="torch")
    meter = make_meter("nvml", args.device, synchronize=engine.synchronize, sample_hz=0)
    reader_cmd = [sys.executable, __file__, "--sample", str(samples), "--uuid", uuid]
    reader = subprocess.Popen([*reader_cmd, "--sample-hz", str(args.sample_hz)])
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while not samples.exists() or samples.stat().st_size < 64:
            if reader.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the out-of-process reader did not start (exit {reader.poll()})"
                )
            time.sleep(0.05)
        for batch in args.batch_sizes:
            inputs = engine.make_inputs(batch, args.input_len, seed=0)
            engine.generate(inputs, args.output_len)  # warmup
            for target in args.targets:
                for rep in range(args.repeats):
                    key = f"bs{batch}_{target:g}s_{rep}"
                    if zeus_mon:
                        zeus_mon.begin_window(key)
                    meter.begin_window(key)
                    # as the harness does for short windows: whole generations, repeated
                    # inside the window until it lasts the target
                    t0, calls = time.perf_counter(), 0
                    while calls == 0 or time.perf_counter() - t0 < target:
                        engine.generate(inputs, args.output_len)
                        calls += 1
                    m = meter.end_window(key)
                    zeus_j = zeus_energy(zeus_mon, key) if zeus_mon else math.nan
                    rows.append(
                        {
                            "window": key,
                            "batch_size": batch,
                            "generations": calls,
                            "start_s": m.start_s,
                            "end_s": m.end_s,
                            "time_s": m.time_s,
                            "joulebench_j": m.total_j,
                            "zeus_j": zeus_j,
                        }
                    )
                    time.sleep(0.2)
        time.sleep(3.0 / args.sample_hz)  # the reader's next samples bracket the last edge
    finally:
        reader.send_signal(signal.SIGTERM)
        reader.wait(timeout=10)
        meter.close()
    with samples.open() as f:
        data = [
            (float(r["t"]), float(r["energy_j"]), float(r["power_w"])) for r in csv.DictReader(f)
        ]
    ts, es, ps = (list(c) for c in zip(*data, strict=True))
    for r in rows:
        r["oop_j"] = interpolate(ts, es, r["end_s"]) - interpolate(ts, es, r["start_s"])
        r["oop_power_j"] = power_integral(ts, ps, r["start_s"], r["end_s"])
        for col in ("zeus", "oop", "oop_power"):
            r[f"d_{col}_pct"] = pct(r[f"{col}_j"], r["joulebench_j"])
    out_csv = args.out / "crosscheck.csv"
    tmp = out_csv.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_csv)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (fake NVML)"
    print(f"cross-check: {args.model_dir.name} {args.precision} on {name}; NVML reader in another")
    print(f"process at {args.sample_hz:g} Hz; {len(ts)} samples; Δ% against joulebench")
    print_table(rows, zeus_mon is not None)
    if zeus_mon is None:
        print("Zeus: not run (--zeus off; the dry run's fake NVML cannot stand in for Zeus's)")
    columns = ["oop"] + (["zeus"] if zeus_mon else [])
    misses = verdict(rows, columns, args.min_target_s)
    for line in misses:
        print(f"MISSED {line}")
    if not misses:
        print(
            f"targets met: medians within ±{MEDIAN_PCT:g}%, no window >= "
            f"{args.min_target_s:g} s beyond ±{WINDOW_PCT:g}% ({', '.join(columns)})"
        )
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sample is not None:
        return sample(args.sample, args.uuid, args.sample_hz)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
