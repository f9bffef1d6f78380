"""The report and figures render in a real browser (headless Chromium), offline, without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import make_record
from joulebench.cli import main
from joulebench.results import analysis, derived, plots, study_plots

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow
#: Never a silent skip: a run without a browser has not seen the report open.
NO_CHROMIUM = (
    "these tests open the report in headless Chromium, and none is on PATH: install it "
    "(Debian/Ubuntu: `sudo apt-get install chromium`; .ci/run does) or deselect them "
    "knowingly with `-k 'not report_render'`"
)


@pytest.fixture(autouse=True)
def needs_chromium() -> None:
    if CHROMIUM is None:
        pytest.fail(NO_CHROMIUM, pytrace=False)


FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is required here"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    reps = [
        {"pe": 1.0, "pt": 0.1, "fe": 11.0, "ft": 1.1},
        {"pe": 1.2, "pt": 0.12, "fe": 12.0, "ft": 1.2},
    ]
    records = [
        make_record(
            p, b, [{k: v * b**0.5 / (2 if p == "bf16" else 1) for k, v in r.items()} for r in reps]
        )
        for p in ("fp32", "bf16")
        for b in (1, 4, 16)
    ]
    tidy = analysis.measurements(records)
    analysis_cfg = {
        "baseline": {"precision": "fp32", "batch_size": 1},
        "confidence": 0.95,
        "grid_intensity_g_per_kwh": 400.0,
        "price_per_kwh": 0.1,
        "price_per_device_hour": 0.0,
        "currency": "USD",
        "slo": {},
    }
    summary = derived.enrich(analysis.summarize(tidy), analysis_cfg)
    tidy.write_parquet(out / "measurements.parquet")
    summary.write_parquet(out / "summary.parquet")
    (out / "records").mkdir()
    for i, record in enumerate(records):
        (out / "records" / f"r{i}.json").write_text(json.dumps(record))
    audit = ["provenance", str(out / "records"), "--out-json", str(out / "audit.json")]
    assert main(audit) == 0
    assert (
        main(
            [
                "findings",
                "--summary",
                str(out / "summary.parquet"),
                "--measurements",
                str(out / "measurements.parquet"),
                "--out-md",
                str(out / "findings.md"),
                "--out-html",
                str(out / "findings.html"),
                "--audit",
                str(out / "audit.json"),
            ]
        )
        == 0
    )
    plots.save(
        study_plots.energy_per_token_vs_batch(pl.read_parquet(out / "summary.parquet")),
        out / "energy_per_token_vs_batch",
    )
    return out


def figure_marks(dom: str) -> dict[str, dict[str, int]]:
    """Per <figure> of the rendered page: the drawn data marks (not axes, legends or titles) by
    kind, counted inside vega's mark containers (``<g class="mark-symbol role-mark …">``)."""
    out: dict[str, dict[str, int]] = {}
    for figure in re.finditer(r'<figure id="([^"]+)">(.*?)</figure>', dom, re.S):
        counts: dict[str, int] = {}
        marks = re.finditer(r'<g class="mark-(\w+) role-mark[^"]*"[^>]*>(.*?)</g>', figure[2], re.S)
        for mark in marks:
            drawn = len(re.findall(r"<(?:path|line|rect)\b", mark[2]))
            counts[mark[1]] = counts.get(mark[1], 0) + drawn
        out[figure[1]] = counts
    return out


def test_findings_page_renders_its_charts(study: Path, tmp_path: Path) -> None:
    page = study / "findings.html"
    dom = chromium(page, tmp_path, "--dump-dom")
    # the made-up study: bf16 halves every energy and batching saves √batch in both phases, so
    # neither "more than" is settled; no serving data; the SLO gives a recommendation
    verdicts = [
        ("inconclusive", "inconclusive"),
        ("inconclusive", "inconclusive"),
        ("missing", "missing data"),
        ("recommendation", "recommendation"),
    ]
    spans = re.findall(r'<span class="verdict (\w+)">([^<]*)</span>', dom.stdout)
    assert spans == verdicts
    assert "Provenance audit: NOT comparable" in dom.stdout  # made-up records: no code hash
    assert console_messages(dom.stderr) == []
    # every figure drew its data: 2 precisions × 3 batch sizes = 6 configurations
    marks = figure_marks(dom.stdout)
    assert set(marks) == set(plots.FIGURES)
    per_token = marks["energy_per_token_vs_batch"]  # a point and a CI per configuration × phase
    assert [per_token.get(k, 0) for k in ("symbol", "rule", "line")] == [12, 12, 4]
    assert marks["phase_energy_per_request"].get("rect", 0) == 12  # a bar per config × phase
    assert marks["time_energy_pareto"].get("symbol", 0) == 6  # a point per configuration


def test_interactive_figure_runs_offline(study: Path, tmp_path: Path) -> None:
    dom = chromium(
        study / "energy_per_token_vs_batch.html",
        tmp_path,
        "--virtual-time-budget=8000",
        "--dump-dom",
    )
    assert 'class="marks"' in dom.stdout  # vega drew the chart with its inlined scripts
    assert console_messages(dom.stderr) == []
