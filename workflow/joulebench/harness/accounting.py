"""Energy accounting of a measured run: net energy (gross − idle), the trace integral of every
window against the meter's own figure (the conservation check), and the direct phase split (the
trace over [start, first token] and [first token, end] of every full generation) beside the
subtraction method; and the record's ``energy_method`` saying how all of it was measured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from joulebench.energy.trace import PowerTrace
from joulebench.harness.phases import PhaseRun, Window


def _pct(value: float | None, reference: float) -> float | None:
    if value is None or not math.isfinite(value) or not reference:
        return None
    return 100.0 * (value - reference) / reference


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def account_energy(run: PhaseRun, trace: PowerTrace) -> list[dict[str, Any]]:
    """Finish the rows: net energy, trace integrals, conservation and direct phase energy.

    - net = gross − idle power × duration (idle over every device the idle window measured);
    - conservation_pct = 100 · (trace integral − meter figure) / meter figure, per window,
      over the devices that have both;
    - direct phases: the trace over [call start, first token] and [first token, call end] of
      every full generation, averaged per call; compared with the subtraction method.
    """
    idle_w = run.idle.total_j / run.idle.time_s if run.idle and run.idle.time_s > 0 else None
    traced = set(trace.devices)
    rows: list[dict[str, Any]] = []
    by_rep: dict[int, dict[str, dict[str, Any]]] = {}
    fulls: dict[int, Window] = {}
    for row in run.rows:
        row = dict(row)
        w: Window | None = row.pop("_window", None)
        row["idle_power_w"] = idle_w
        row["net_energy_j"] = row["energy_j"] - idle_w * row["time_s"] if idle_w else None
        row |= {
            "trace_energy_j": None,
            "conservation_pct": None,
            "direct_energy_j": None,
            "direct_time_s": None,
            "direct_vs_subtraction_pct": None,
            "start_s": None,
            "end_s": None,
            "calls": [],
        }
        if w is not None:
            row["start_s"], row["end_s"] = w.start_s - run.origin, w.end_s - run.origin
            row["calls"] = [[round(x - run.origin, 6) for x in c] for c in w.calls]
            # a device whose window energy already came from the trace cannot check itself
            both = sorted(
                d for d in set(w.energy_j) & traced if not w.sources.get(d, "").endswith("-trace")
            )
            if both:
                t_j = trace.total_energy([w.start_s], [w.end_s], both) / w.repeats
                row["trace_energy_j"] = _finite(t_j)
                row["conservation_pct"] = _pct(t_j, sum(w.energy_j[d] for d in both))
        by_rep.setdefault(row["rep"], {})[row["phase"]] = row
        rows.append(row)
        if w is not None and row["phase"] == "full":
            fulls[row["rep"]] = w
    for rep, w in fulls.items():
        _direct(by_rep[rep], w, trace, traced)
    return rows


def _direct(
    rep_rows: dict[str, dict[str, Any]], full: Window, trace: PowerTrace, traced: set[str]
) -> None:
    """Trace-attributed prefill and decode energy of one full window (needs every device)."""
    calls = [c for c in full.calls if math.isfinite(c[1])]
    if not calls or not set(full.energy_j) <= traced:
        return
    devices = sorted(full.energy_j)
    starts, firsts, ends = (list(x) for x in zip(*calls, strict=True))
    n = len(calls)
    pre_j = trace.total_energy(starts, firsts, devices) / n
    dec_j = trace.total_energy(firsts, ends, devices) / n
    pre_s = sum(f - s for s, f in zip(starts, firsts, strict=True)) / n
    dec_s = sum(e - f for f, e in zip(firsts, ends, strict=True)) / n
    for phase, j, s in (("prefill", pre_j, pre_s), ("decode", dec_j, dec_s)):
        row = rep_rows[phase]
        row["direct_energy_j"], row["direct_time_s"] = _finite(j), s
        row["direct_vs_subtraction_pct"] = _pct(j, row["energy_j"])
    rep_rows["full"]["direct_energy_j"] = _finite(pre_j + dec_j)
    rep_rows["full"]["direct_time_s"] = pre_s + dec_s


def energy_method(
    meter_info: dict[str, Any],
    phases: PhaseRun,
    rows: list[dict[str, Any]],
    m: dict[str, Any],
    clock_offset: float,
    trace_samples: int,
    trace_out: str | Path | None,
) -> dict[str, Any]:
    """How the energy of a record was measured: meter, fields, rate, idle, repeats, timeline."""
    idle = phases.idle
    return {
        "meter": meter_info["source"],
        "sources": meter_info.get("sources", {}),
        "power_fields": meter_info.get("power_fields", {}),
        "sample_hz": meter_info.get("sample_hz", 0),
        "idle": None
        if idle is None
        else {
            "duration_s": idle.time_s,
            "power_w": idle.total_j / idle.time_s,
            "power_w_by_device": {d: e / idle.time_s for d, e in idle.energy_j.items()},
        },
        "min_window_s": m["min_window_s"],
        "window_repeats": {
            p: [r["window_repeats"] for r in rows if r["phase"] == p] for p in ("prefill", "full")
        },
        "phase_methods": {
            "subtraction": "prefill = 1-token generate window; decode = full − prefill",
            "direct": "power trace integrated over [start, first token] and "
            "[first token, end] of every full generation",
        },
        "time_origin_unix": clock_offset + phases.origin,
        "timeline": [
            {**t, "start_s": t["start_s"] - phases.origin, "end_s": t["end_s"] - phases.origin}
            for t in phases.timeline
        ],
        "trace_file": Path(trace_out).name if trace_out is not None else None,
        "trace_samples": trace_samples,
    }
