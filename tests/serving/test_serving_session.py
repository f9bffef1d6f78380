"""A whole serving session against the stand-in server: records, table, trace, figures.

The stand-in (tests/standin_server.py) is started by the session's own lifecycle (kind ``tgi``
with a command), so the CPU estimate follows its process tree. An ``external`` server may be
measured only by a hardware meter of this host: asking for the estimate is refused up front.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import NO_POWERCAP, REPO
from joulebench.core.errors import ConfigError
from joulebench.results import analysis, plots, power_plots, serving_plots
from joulebench.serving.load_plan import build_requests
from joulebench.serving.session import run_session
from joulebench.study import config
from joulebench.study.serving_specs import session_specs

#: The stand-in server, started and stopped by the session (OpenAI protocol, 20 ms per token).
STANDIN = {
    "name": "standin",
    "kind": "tgi",
    "protocol": "openai",
    "command": [sys.executable, str(REPO / "tests" / "standin_server.py"), "{port}"],
    "startup_timeout_s": 30,
    "stop_timeout_s": 5,
}


def study(
    tiny_model: Path,
    url: str | None = None,
    measurement: dict | None = None,
    device: str = "cpu",
    **serving,
) -> dict:
    """A small serving study on the stand-in, or on an external server at ``url``."""
    server = {"name": "fake", "kind": "external", "url": url} if url else STANDIN
    base = {
        "servers": [server],
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
            "device": device,
            # auto on the CPU: the estimate on every host, unless a test says otherwise
            "measurement": {"powercap_root": NO_POWERCAP} | (measurement or {}),
            "models": [{"name": "tiny", "source": "local", "path": str(tiny_model)}],
            "precisions": ["fp32"],
            "batch_sizes": [1],
            "input_lengths": [8],
            "output_lengths": [4],
            "serving": base | serving,
        }
    )


def test_session_records_table_trace_and_figures(tiny_model: Path, tmp_path: Path) -> None:
    (spec,) = session_specs(study(tiny_model, requests=10))
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
        assert rec["meter_source"] == "estimate" and rec["load"]["ok"] == 10
        assert "process tree" in rec["meter"]["processes"]  # the server's, not this process
        assert rec["measured"]["server_may_run_elsewhere"] is False
        a, w = rec["energy"]["attribution"], rec["window"]
        # smoke check only: the estimate's trace and window apply one model, so conservation and
        # closure cannot catch a metering error here (energy truth on fake hardware:
        # tests/serving/test_serving_meters.py); they show the checks are computed and recorded
        # (fresh-clone CI runs read up to 3.0% here; the cause is not yet found: see the note
        # of 2026-12-01, so the band is one that only a gross error leaves)
        assert abs(a["conservation_pct"]) < 10.0 and abs(a["closure_pct"]) < 10.0
        assert a["shares_raw_j"] == pytest.approx(a["trace_j"], rel=1e-6)
        trace = pl.read_parquet(tmp_path / rec["trace"]["file"])
        assert set(trace["device"]) == {"cpu"} and trace.height == rec["trace"]["samples"]
        # the trace covers the load window (times since the load started)
        assert trace["t_s"].min() <= w["start_s"] - w["load_start_s"]
        assert trace["t_s"].max() >= w["end_s"] - w["load_start_s"]
    table = analysis.serving_table(records)
    assert table.height == 5 and set(table["meter_source"]) == {"estimate"}
    assert table["closure_pct"].is_not_null().all()
    grouped = pl.read_parquet(tmp_path / "grouped_r20.parquet")
    assert (grouped["release_s"] * 10 % 1).abs().max() < 1e-6  # on the 100 ms grid
    assert (grouped["hold_s"] > 0).any()
    # bookkeeping only (the table's rows are the record's requests); the shares' energy is
    # checked against known hardware energy in tests/serving/test_serving_meters.py
    assert grouped["energy_attributed_scaled_j"].sum() == pytest.approx(
        records[2]["energy"]["attribution"]["requests_scaled_j"]
    )
    chart = serving_plots.serving_energy_latency(table)
    saved = plots.save(chart, tmp_path / "fig")
    assert "estimate" in saved[0].read_text()
    power = power_plots.serving_power_over_time(
        records[0],
        pl.read_parquet(tmp_path / "poisson_r20.trace.parquet"),
        pl.read_parquet(tmp_path / "poisson_r20.parquet"),
    )
    html, png, _ = plots.save(power, tmp_path / "power")
    assert "requests in flight" in html.read_text() and png.stat().st_size
    # the same figure as a user (and the workflow's rule) makes it: `joulebench plot-serving-power`
    from joulebench.cli import main

    stem = tmp_path / "cli-power"
    argv = ["plot-serving-power", str(written[0]), "--out-stem", str(stem)]
    argv += ["--trace", str(tmp_path / "poisson_r20.trace.parquet")]
    assert main([*argv, "--table", str(tmp_path / "poisson_r20.parquet")]) == 0
    data = stem.with_suffix(".png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 400 <= width <= 4000 and 200 <= height <= 4000, (width, height)  # a figure, not a dot
    assert len(data) > 10_000
    assert "requests in flight" in stem.with_suffix(".html").read_text()


def test_in_flight_counts_requests_between_send_and_end() -> None:
    table = pl.DataFrame({"sent_s": [0.1, 0.2, 0.5], "end_s": [0.4, 0.3, float("nan")]})
    steps = power_plots.in_flight(table)
    assert steps["t_s"].to_list() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert steps["in_flight"].to_list() == [0, 1, 2, 1, 0, 1]


@pytest.mark.parametrize("meter", ["estimate", ["nvml", "estimate"]])
def test_external_server_with_the_estimate_is_refused(tiny_model: Path, meter: object) -> None:
    with pytest.raises(ConfigError) as err:
        study(tiny_model, "http://127.0.0.1:1", measurement={"meter": meter})
    text = str(err.value)
    assert "'measurement.meter'" in text and "is external" in text
    assert "serving.servers[0]" in text and "hardware meter" in text


def test_external_server_with_auto_and_no_rapl_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    # auto on a CPU study where RAPL is absent means the estimate: refused, saying so
    with pytest.raises(ConfigError, match=r"measurement.meter.*'auto' resolves to \['estimate'\]"):
        study(tiny_model, "http://127.0.0.1:1", measurement={"powercap_root": str(tmp_path)})


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
    from joulebench.study.serving_specs import Experiment

    replay = build_requests(Experiment(**spec.experiments[0]), spec, tok, 0)
    assert [r.release_s for r in replay] == [0.0, 0.5, 1.0, 1.5]
    assert [r.input_len for r in replay] == [5, 6, 7, 8]  # exact lengths from the trace
    assert [r.output_len for r in replay] == [3] * 4
    paper = build_requests(Experiment(**spec.experiments[1]), spec, tok, 0)
    assert [r.output_len for r in paper] == [2, 5, 2, 5]  # from the file, cycled
    gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(paper)]
    assert all(0.1 <= g <= 0.2 for g in gaps)


def test_synthetic_prompts_have_exact_lengths(tiny_model: Path) -> None:
    from joulebench.workload.prompts import synthetic
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


def test_experiment_ids_with_dots_keep_their_files_apart(tiny_model: Path, tmp_path: Path) -> None:
    cfg = study(
        tiny_model, requests=4, rates=[40.5], arrivals=[{"name": "poisson", "process": "poisson"}]
    )
    (spec,) = session_specs(cfg)
    (written,) = run_session(spec, str(tiny_model), tmp_path)
    assert written.name == "poisson_r40.5.json"
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("poisson"))
    assert names == ["poisson_r40.5.json", "poisson_r40.5.parquet", "poisson_r40.5.trace.parquet"]


def test_the_job_refuses_the_estimate_for_an_external_server(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A spec that skipped config validation (passed by hand) is refused before any request."""
    (spec,) = session_specs(study(tiny_model))
    data = spec.to_dict()
    data["server"] = {**data["server"], "kind": "external", "url": "http://127.0.0.1:1"}
    data["measurement"]["meter"] = "estimate"
    from joulebench.study.serving_specs import SessionSpec

    with pytest.raises(ConfigError, match=r"'measurement\.meter'.*is external"):
        run_session(SessionSpec.from_dict(data), str(tiny_model), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
