"""The per-phase medians `joulebench bench` prints, checked against numbers worked by hand."""

from __future__ import annotations

import math

from joulebench.harness.phase_summary import phase_medians


def run(phase: str, energy_j: float, tokens: int, time_s: float, **extra: float | None) -> dict:
    return {
        "phase": phase,
        "energy_j": energy_j,
        "tokens": tokens,
        "time_s": time_s,
        "conservation_pct": extra.pop("conservation_pct", 0.0),
        **extra,
    }


def test_medians_per_phase_by_hand() -> None:
    record = {
        "runs": [
            run("prefill", 10.0, 5, 1.0, direct_energy_j=5.0, net_energy_j=None),
            run("prefill", 30.0, 5, 0.5, direct_energy_j=None, net_energy_j=None),
            run("prefill", 20.0, 5, 2.0, direct_energy_j=15.0, net_energy_j=None),
            run("decode", 8.0, 4, 2.0, conservation_pct=-1.0),
            run("decode", 12.0, 4, 1.0, conservation_pct=3.0),
        ]
    }
    prefill, decode, full = phase_medians(record)
    assert prefill.phase == "prefill" and prefill.repetitions == 3
    assert prefill.j_per_token == 4.0  # 2, 6, 4 J/token
    assert prefill.direct_j_per_token == 2.0  # 1 and 3 J/token; the missing one is left out
    assert math.isnan(prefill.net_j_per_token)  # no run has it
    assert prefill.tokens_per_s == 5.0  # 5, 10, 2.5 tokens/s
    assert decode.repetitions == 2
    assert decode.j_per_token == 2.5  # 2 and 3 J/token
    assert decode.tokens_per_s == 3.0  # 2 and 4 tokens/s
    assert decode.conservation_pct == 1.0
    assert full.phase == "full" and full.repetitions == 0 and math.isnan(full.j_per_token)
