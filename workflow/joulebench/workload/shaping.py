"""Arrival shaping between users and the server: when each arrived request is released.

This is the knob an operator controls. ``pass`` releases every request when it arrives;
``group`` holds requests and releases everything waiting every ``every_ms`` milliseconds
(on a fixed grid from the load start) or as soon as ``max_waiting`` requests wait, whichever
comes first. Bigger groups mean bigger server batches (less energy per request) and longer waits.
Release times are a pure function of arrival times, so they are known before the load starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from joulebench.core.errors import ConfigError

POLICIES = ("pass", "group")


@dataclass(frozen=True)
class ShapingSpec:
    policy: str = "pass"
    every_ms: float | None = None
    max_waiting: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def label(self) -> str:
        if self.policy == "pass":
            return "pass"
        parts = []
        if self.every_ms:
            parts.append(f"every {self.every_ms:g} ms")
        if self.max_waiting:
            parts.append(f"at {self.max_waiting} waiting")
        return "group " + " or ".join(parts)


def check(spec: ShapingSpec, key: str = "shaping") -> None:
    if spec.policy not in POLICIES:
        raise ConfigError(
            f"{key}.policy",
            f"unknown shaping policy '{spec.policy}'; allowed: {', '.join(POLICIES)}",
        )
    if spec.policy == "group":
        if spec.every_ms is None and spec.max_waiting is None:
            raise ConfigError(f"{key}", "policy 'group' needs every_ms, max_waiting or both")
        if spec.every_ms is not None and not spec.every_ms > 0:
            raise ConfigError(f"{key}.every_ms", f"must be > 0, got {spec.every_ms}")
        if spec.max_waiting is not None and spec.max_waiting < 1:
            raise ConfigError(f"{key}.max_waiting", f"must be >= 1, got {spec.max_waiting}")
    elif spec.every_ms is not None or spec.max_waiting is not None:
        raise ConfigError(f"{key}", "every_ms and max_waiting only apply to policy 'group'")


def release_times(arrivals: np.ndarray, spec: ShapingSpec) -> np.ndarray:
    """Release time of each request (same order as ``arrivals``, which must be sorted).

    With only ``max_waiting``, requests left waiting at the end (fewer than K) are released
    with the last arrival, so every request is sent.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    if spec.policy == "pass" or arrivals.size == 0:
        return arrivals.copy()
    period = spec.every_ms / 1000.0 if spec.every_ms else None
    k = spec.max_waiting or math.inf
    release = np.empty_like(arrivals)
    waiting: list[int] = []

    def flush(at: float) -> None:
        release[waiting] = at
        waiting.clear()

    for i, t in enumerate(arrivals):
        if period is not None and waiting:
            tick = math.floor(arrivals[waiting[0]] / period + 1e-12) * period + period
            if tick <= t:  # the grid tick after the oldest waiting request came first
                flush(tick)
        waiting.append(i)
        if len(waiting) >= k:
            flush(t)
    if waiting:
        if period is not None:
            flush(math.floor(arrivals[waiting[0]] / period + 1e-12) * period + period)
        else:
            flush(arrivals[-1])
    return release
