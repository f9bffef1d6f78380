"""A real `transformers serve` server on the CPU: one session, two experiments (slow tier)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import psutil
import pytest
from joulebench import config
from joulebench.serving import run_session, session_specs

pytestmark = pytest.mark.slow


def test_real_server_session(tiny_model: Path, tmp_path: Path) -> None:
    cfg = config.validate(
        {
            "study": "real",
            "models": [{"name": "tiny", "source": "local", "path": str(tiny_model)}],
            "precisions": ["fp32"],
            "batch_sizes": [1],
            "input_lengths": [8],
            "output_lengths": [4],
            "serving": {
                "servers": [{"name": "tf", "kind": "transformers"}],
                "requests": 8,
                "warmup_requests": 2,
                "input_len": 16,
                "output_len": 8,
                "rates": [4],
                "arrivals": [
                    {"name": "poisson", "process": "poisson"},
                    {
                        "name": "grouped",
                        "process": "poisson",
                        "shaping": {"policy": "group", "max_waiting": 4},
                    },
                ],
                "idle_s": 0.5,
            },
        }
    )
    (spec,) = session_specs(cfg)
    written = run_session(spec, str(tiny_model), tmp_path)
    assert [p.name for p in written] == ["poisson_r4.json", "grouped_r4.json"]
    log = (tmp_path / "server.log").read_text()
    assert " serve " in log.splitlines()[0] and "--continuous-batching" in log
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    for path in written:
        record = json.loads(path.read_text())
        table = pl.read_parquet(path.with_suffix(".parquet"))
        assert record["meter_source"] == "estimate"
        assert (table["meter_source"] == "estimate").all()
        assert table.height == 8 and (table["status"] == "ok").all(), table["error"].to_list()
        assert (table["output_tokens"] == 8).all()  # min_new_tokens held the length
        assert (table["input_tokens"] == 16).all()
        e = record["energy"]
        assert e["window"]["energy_j"] > 0 and e["attribution"]["ok"], e["attribution"]
        assert e["attribution"]["sum_j"] == pytest.approx(e["window"]["energy_j"], rel=1e-9)
        assert table["energy_attributed_j"].sum() + e["attribution"]["idle_j"] == pytest.approx(
            e["window"]["energy_j"], rel=1e-9
        )
        assert record["latency"]["e2e_s_p50"] > 0
        assert record["server"]["startup_s"] > 0 and record["provenance"]["git"]
    grouped = pl.read_parquet(tmp_path / "grouped_r4.parquet")
    assert grouped["release_s"].n_unique() <= 3  # released in groups of 4 (+ the rest)
