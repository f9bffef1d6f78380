"""A whole serving session against the fake server (kind `external`): records, table, figure."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
import pytest
from fakeserver import FakeServerProcess
from joulebench import analysis, config, plots
from joulebench.serving import build_requests, run_session, session_specs


def study(tiny_model: Path, url: str, **serving) -> dict:
    base = {
        "servers": [{"name": "fake", "kind": "external", "url": url}],
        "requests": 12,
        "warmup_requests": 2,
        "input_len": 8,
        "output_len": 4,
        "rates": [20, 40],
        "arrivals": [
            {"name": "poisson", "process": "poisson"},
            {
                "name": "grouped",
                "process": "poisson",
                "shaping": {"policy": "group", "every_ms": 100},
            },
            {"name": "users", "process": "closed", "users": 3},
        ],
        "idle_s": 0.1,
        "trace_interval_s": 0.01,
    }
    return config.validate(
        {
            "study": "unit",
            "models": [{"name": "tiny", "source": "local", "path": str(tiny_model)}],
            "precisions": ["fp32"],
            "batch_sizes": [1],
            "input_lengths": [8],
            "output_lengths": [4],
            "serving": base | serving,
        }
    )


def test_session_records_table_and_figure(tiny_model: Path, tmp_path: Path) -> None:
    with FakeServerProcess(token_delay_s=0.005) as server:
        (spec,) = session_specs(study(tiny_model, server.url))
        written = run_session(spec, str(tiny_model), tmp_path)
    assert [p.stem for p in written] == [
        "poisson_r20",
        "poisson_r40",
        "grouped_r20",
        "grouped_r40",
        "users_u3",
    ]
    records = [json.loads(p.read_text()) for p in written]
    for rec in records:
        assert rec["meter_source"] == "estimate" and rec["load"]["ok"] == 12
        attribution = rec["energy"]["attribution"]
        assert attribution["sum_j"] == pytest.approx(rec["window"]["energy_j"], rel=1e-9)
        assert rec["energy"]["idle_baseline"]["power_w"] > 0
        assert len(rec["trace"]["t_s"]) > 3
    table = analysis.serving_table(records)
    assert table.height == 5 and set(table["meter_source"]) == {"estimate"}
    grouped = pl.read_parquet(tmp_path / "grouped_r20.parquet")
    assert (grouped["release_s"] * 10 % 1).abs().max() < 1e-6  # on the 100 ms grid
    assert (grouped["hold_s"] > 0).any()
    chart = plots.serving_energy_latency(table)
    saved = plots.save(chart, tmp_path / "fig")
    assert "estimate" in saved[0].read_text()


def test_trace_and_file_prompts(tiny_model: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"timestamp": 100 + i * 0.5, "input_len": 5 + i, "output_len": 3}) + "\n"
            for i in range(4)
        )
    )
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,output_len\nhello there,2\nsecond prompt here,5\n")
    cfg = study(
        tiny_model,
        "http://127.0.0.1:1",
        requests=4,
        arrivals=[
            {"name": "replay", "process": "trace", "trace": str(trace)},
            {"name": "paper", "process": "uniform", "break_min": 0.1, "break_max": 0.2},
        ],
        prompts={"source": "file", "path": str(prompts)},
    )
    (spec,) = session_specs(cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    from joulebench.serving import Experiment

    replay = build_requests(Experiment(**spec.experiments[0]), spec, tok, 0)
    assert [r.release_s for r in replay] == [0.0, 0.5, 1.0, 1.5]
    assert [r.input_len for r in replay] == [5, 6, 7, 8]  # exact lengths from the trace
    assert [r.output_len for r in replay] == [3] * 4
    paper = build_requests(Experiment(**spec.experiments[1]), spec, tok, 0)
    assert [r.output_len for r in paper] == [2, 5, 2, 5]  # from the file, cycled
    gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(paper)]
    assert all(0.1 <= g <= 0.2 for g in gaps)


def test_synthetic_prompts_have_exact_lengths(tiny_model: Path) -> None:
    from joulebench.prompts import synthetic
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [1, 7, 32, 100] * 5
    prompts = synthetic(tok, len(lengths), lengths, 4, seed=0)
    assert [len(tok.encode(p.text, add_special_tokens=False)) for p in prompts] == lengths
    assert synthetic(tok, 3, 9, 4, seed=1) == synthetic(tok, 3, 9, 4, seed=1)


def test_sigterm_stops_the_server_and_keeps_nothing_partial(
    tiny_model: Path, tmp_path: Path
) -> None:
    """`joulebench serve` killed mid-experiment: server process group gone, no record written."""
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from conftest import REPO

    pidfile = tmp_path / "server.pid"
    wrapper = tmp_path / "tgi_stand_in.py"
    wrapper.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from fakeserver import FakeServer\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "FakeServer(token_delay_s=0.05).serve(int(sys.argv[1]))\n"
    )
    server = {"name": "tgi", "kind": "tgi", "command": [sys.executable, str(wrapper), "{port}"]}
    (spec,) = session_specs(study(tiny_model, "unused", servers=[server], requests=50, rates=[2]))
    out, log = tmp_path / "out", tmp_path / "serve.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "joulebench", "serve", "--model-dir", str(tiny_model),
             "--spec-json", json.dumps(spec.to_dict()), "--out-dir", str(out)],
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "[1/" not in log.read_text():  # the first experiment's load is running
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        server_pid = int(pidfile.read_text())
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode != 0, text
    assert "received SIGTERM" in text and "server stopped" in text, text
    assert not psutil.pid_exists(server_pid) or (
        psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    )
    assert not list(out.glob("*.json")) and not list(out.glob("*.parquet"))
