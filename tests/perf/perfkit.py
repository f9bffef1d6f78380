"""What every perf script shares: one table of its figures, each beside its target, the
machine's load beside them (the numbers mean little without it), and an exit status that says
whether every target was met (0) or not (1)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


class OthersCpu:
    """The share (%) of all cores that other processes used while the block ran."""

    percent = float("nan")

    def __enter__(self) -> OthersCpu:
        self.start = (time.monotonic(), _machine_busy_s(), _own_cpu_s())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, own = (
            now - then
            for now, then in zip(
                (time.monotonic(), _machine_busy_s(), _own_cpu_s()), self.start, strict=True
            )
        )
        self.percent = max(0.0, 100 * (busy - own) / (wall * (os.cpu_count() or 1)))


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def _own_cpu_s() -> float:
    """This process and its waited-for children (a stub server, a peer)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_load(others: OthersCpu) -> str:
    return (
        f"{os.cpu_count()} cores, load average (1 min) {os.getloadavg()[0]:.2f}, "
        f"other processes used {others.percent:.0f}% of all cores during the run"
    )


@dataclass(frozen=True)
class Figure:
    """One measured figure; ``limit`` with ``at_most`` (or not) makes it a target."""

    name: str
    value: float
    unit: str
    limit: float | None = None
    at_most: bool = True

    @property
    def target(self) -> str:
        if self.limit is None:
            return ""
        return f"{'<=' if self.at_most else '>='} {self.limit:g}"

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit


def report(title: str, figures: list[Figure], others: OthersCpu) -> int:
    """Print the table with the machine's load; 1 if any target was missed, else 0."""
    width = max(len(f.name) for f in figures)
    print(title)
    print(f"machine: {machine_load(others)}")
    print(f"{'figure':<{width}}  {'value':>12}  {'unit':<10}{'target':>12}  met")
    for f in figures:
        met = {None: "", True: "yes", False: "NO"}[f.met]
        print(f"{f.name:<{width}}  {f.value:>12.4g}  {f.unit:<10}{f.target:>12}  {met}")
    missed = [f.name for f in figures if f.met is False]
    print(f"targets missed: {', '.join(missed)}" if missed else "every target met")
    return 1 if missed else 0
