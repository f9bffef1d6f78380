"""`joulebench compare`: two real CPU studies (1 and 2 torch threads) in one table and figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import bench_fp32_cpu
from joulebench import compare, plots
from joulebench.cli import main
from test_report_render import CHROMIUM, chromium, console_messages

pytestmark = pytest.mark.slow

BATCHES = (1, 2)


def run_study(model: Path, root: Path, threads: int) -> Path:
    """A tiny study measured with ``threads`` torch threads, aggregated like the workflow does."""
    results = root / "results"
    records = []
    for batch in BATCHES:
        out = results / "records" / f"bs{batch}.json"
        argv = [*bench_fp32_cpu(model), "--batch-size", str(batch), "--input-len", "16"]
        argv += ["--output-len", "8", "--warmup", "1", "--repetitions", "3"]
        argv += ["--min-window-s", "0.05", "--idle-s", "0.1", "--sample-hz", "0"]
        argv += ["--threads", str(threads), "--out", str(out), "--quiet"]
        assert main(argv) == 0
        records.append(str(out))
    tables = results / "tables"
    assert (
        main(
            [
                "aggregate",
                *records,
                "--measurements",
                str(tables / "measurements.parquet"),
                "--summary",
                str(tables / "summary.parquet"),
                "--summary-csv",
                str(tables / "summary.csv"),
                "--long",
                str(tables / "long.parquet"),
            ]
        )
        == 0
    )
    return results


@pytest.fixture(scope="module")
def studies(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    before = torch.get_num_threads()
    try:
        one = run_study(tiny_model, tmp_path_factory.mktemp("one-thread"), 1)
        two = run_study(tiny_model, tmp_path_factory.mktemp("two-threads"), 2)
    finally:
        torch.set_num_threads(before)
    return one, two


@pytest.fixture(scope="module")
def compared(studies: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("comparison")
    one, two = studies
    assert main(["compare", str(one), str(two.parent), "--out-dir", str(out)]) == 0
    return out


def test_studies_side_by_side_in_one_table(studies: tuple[Path, Path], compared: Path) -> None:
    table = pl.read_parquet(compared / "comparison.parquet")
    labels = sorted(set(table["study"]))
    # the records say how each study ran: the thread count tells the two apart
    assert [lbl.split(" · ")[-1] for lbl in labels] == ["1 thread", "2 threads"]
    one_label = next(lbl for lbl in labels if lbl.endswith("1 thread"))
    assert set(table["vs"]) == {one_label}
    assert table.height == 2 * len(BATCHES) * 3  # studies × batches × phases
    # each ratio is the second study's mean J/token over the first's, from their own summaries
    means = {
        label: pl.read_parquet(path / "tables" / "summary.parquet").select(
            "batch_size", "phase", "j_per_token_mean"
        )
        for label, path in zip(
            [one_label, next(lbl for lbl in labels if lbl != one_label)], studies, strict=True
        )
    }
    other = table.filter(pl.col("study") != one_label)
    for row in other.iter_rows(named=True):
        a = means[one_label].filter(batch_size=row["batch_size"], phase=row["phase"])
        b = means[row["study"]].filter(batch_size=row["batch_size"], phase=row["phase"])
        expected = b["j_per_token_mean"][0] / a["j_per_token_mean"][0]
        assert row["j_per_token_ratio"] == pytest.approx(expected, rel=1e-9)
        assert row["ratio_ci_low"] <= row["j_per_token_ratio"] <= row["ratio_ci_high"]
    assert (table.filter(study=one_label)["j_per_token_ratio"] == 1.0).all()
    # the thread count is what differs between the two studies' provenance
    threads = {
        json.loads(p.read_text())["provenance"]["torch"]["cpu_threads"]
        for study in studies
        for p in (study / "records").glob("*.json")
    }
    assert threads == {1, 2}


def test_comparison_figures_and_page(compared: Path) -> None:
    for name in ("compare_energy_per_token", "compare_ratio"):
        assert "vega" in (compared / f"{name}.html").read_text()
        assert (compared / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (compared / f"{name}.svg").read_text().lstrip().startswith("<svg")
    page = (compared / "comparison.html").read_text()
    assert page.count("<svg") >= 2 and "<script" not in page
    assert "Provenance audit:" in page and "the energy per token of" in page


def test_compare_refuses_what_it_cannot_compare(tmp_path: Path, caplog) -> None:
    assert main(["compare", str(tmp_path), str(tmp_path), "--out-dir", str(tmp_path / "o")]) == 2
    assert f"results: '{tmp_path}' has no tables/summary.parquet" in caplog.text
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--confidence", "x"])
    assert not (tmp_path / "o").exists()


def test_labels_of_same_host_studies_are_told_apart(studies: tuple[Path, Path]) -> None:
    loaded = [compare.load_study(studies[0]), compare.load_study(studies[0])]
    compare.labels_unique(loaded)
    assert len({s.label for s in loaded}) == 2


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (CI installs it; `apt-get install chromium`)",
)
def test_comparison_renders_in_headless_chromium(compared: Path, tmp_path: Path) -> None:
    for name in ("compare_energy_per_token", "compare_ratio"):
        dom = chromium(
            compared / f"{name}.html", tmp_path, "--virtual-time-budget=8000", "--dump-dom"
        )
        assert 'class="marks"' in dom.stdout  # vega drew it with its inlined scripts, offline
        assert console_messages(dom.stderr) == []
    page = chromium(compared / "comparison.html", tmp_path, "--dump-dom")
    assert page.stdout.count("<svg") >= 2 and console_messages(page.stderr) == []


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (CI installs it; `apt-get install chromium`)",
)
def test_ratio_figure_survives_negative_decode_ratios(tmp_path: Path) -> None:
    # on a loaded machine decode J/token (a difference of two windows) can come out negative
    n = 3
    table = pl.DataFrame(
        {
            "study": ["b"] * n,
            "vs": ["a"] * n,
            "phase": ["decode", "decode", "prefill"],
            "precision": ["fp32"] * n,
            "batch_size": [1, 2, 1],
            "input_len": [16] * n,
            "output_len": [8] * n,
            "j_per_token_ratio": [-14.0, 30.0, 2.0],
            "ratio_ci_low": [-40.0, -5.0, 1.5],
            "ratio_ci_high": [10.0, 300.0, 2.5],
        }
    )
    chart = plots.compare_ratio(table)
    assert "1 ratio(s) ≤ 0 not drawn" in chart.to_json()
    plots.save(chart, tmp_path / "ratio")
    dom = chromium(tmp_path / "ratio.html", tmp_path, "--virtual-time-budget=8000", "--dump-dom")
    assert 'class="marks"' in dom.stdout
    assert console_messages(dom.stderr) == []
