"""`joulebench compare`: two real CPU studies (1 and 2 torch threads) in one table and figures."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import bench_fp32_cpu
from joulebench.cli import main
from joulebench.results import compare, compare_plots, plots
from test_report_render import CHROMIUM, NO_CHROMIUM, chromium, console_messages

pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> None:
    """Never a silent skip (as in test_report_render): without Chromium these fail, saying so."""
    if CHROMIUM is None:
        pytest.fail(NO_CHROMIUM, pytrace=False)


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
    reference = table.filter(study=one_label)
    assert reference.height == len(BATCHES) * 3
    assert (reference["j_per_token_ratio"] == 1.0).all()
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


def test_compare_refuses_what_it_cannot_compare(
    studies: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = ["--out-dir", str(tmp_path / "o")]
    assert main(["compare", str(tmp_path), str(tmp_path), *out]) == 2
    assert f"results: '{tmp_path}' has no tables/summary.parquet" in caplog.text
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path), *out, "--confidence", "x"])
    one, two = (str(s) for s in studies)
    caplog.clear()
    assert main(["compare", one, *out]) == 2
    assert "results: compare needs at least two results directories" in caplog.text
    for confidence in ("1.5", "0", "1"):
        caplog.clear()
        assert main(["compare", one, two, *out, "--confidence", confidence]) == 2
        assert f"--confidence: must lie between 0 and 1 (exclusive), got {float(confidence)}" in (
            caplog.text
        )
    assert not (tmp_path / "o").exists()


def synthetic_study(label: str, j_per_token: dict[int, list[float]]) -> compare.Study:
    """A study of repetitions only: J/token per batch size (the rest of the key fixed)."""
    rows = [
        {"model": "m", "engine": "transformers", "precision": "fp32", "batch_size": batch}
        | {"input_len": 16, "output_len": 8, "phase": "decode", "j_per_token": j}
        for batch, reps in j_per_token.items()
        for j in reps
    ]
    return compare.Study(Path(label), label, pl.DataFrame(), pl.DataFrame(rows), None)


def test_headline_says_more_less_or_indistinguishable() -> None:
    steady = [0.98, 0.99, 1.0, 1.01, 1.02]
    ref = synthetic_study("a", {1: steady, 2: steady, 4: steady})
    # ratios 2, 2.2 and 5: the headline is their median, 2.2 (their mean would be 3.07)
    more = synthetic_study("b", {1: [2 * x for x in steady], 2: [2.2 * x for x in steady]})
    more.tidy = pl.concat([more.tidy, synthetic_study("b", {4: [5 * x for x in steady]}).tidy])
    less = synthetic_study("c", {1: [0.5 * x for x in steady]})
    noisy = synthetic_study("d", {1: [0.7, 1.3, 0.9, 1.1, 1.0]})
    lines = compare.headline([ref, more, less, noisy])
    assert lines[0].startswith("b uses 2.20× [")
    assert lines[0].endswith("the energy per token of a (median over 3 measurements: more energy)")
    assert lines[1].startswith("c uses 0.50× [")
    assert lines[1].endswith("(median over 1 measurements: less energy)")
    assert lines[2].startswith("d uses 1.00× [")
    assert lines[2].endswith("(median over 1 measurements: indistinguishable from the same energy)")
    apart = synthetic_study("e", {8: steady})
    assert compare.headline([ref, apart]) == ["e: no measurement in common with a"]


def test_labels_of_same_host_studies_are_told_apart(studies: tuple[Path, Path]) -> None:
    loaded = [compare.load_study(studies[0]), compare.load_study(studies[0])]
    compare.labels_unique(loaded)
    assert len({s.label for s in loaded}) == 2


@pytest.mark.usefixtures("browser")
def test_comparison_renders_in_headless_chromium(compared: Path, tmp_path: Path) -> None:
    for name in ("compare_energy_per_token", "compare_ratio"):
        dom = chromium(
            compared / f"{name}.html", tmp_path, "--virtual-time-budget=8000", "--dump-dom"
        )
        assert 'class="marks"' in dom.stdout  # vega drew it with its inlined scripts, offline
        assert console_messages(dom.stderr) == []
    page = chromium(compared / "comparison.html", tmp_path, "--dump-dom")
    assert page.stdout.count("<svg") >= 2 and console_messages(page.stderr) == []


def negative_ratios() -> pl.DataFrame:
    # on a loaded machine decode J/token (a difference of two windows) can come out negative
    n = 3
    return pl.DataFrame(
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


def test_ratio_figure_says_what_it_leaves_out() -> None:
    spec = compare_plots.compare_ratio(negative_ratios()).to_json()
    assert "1 ratio(s) ≤ 0 not drawn" in spec
    positive = negative_ratios().with_columns(j_per_token_ratio=pl.lit(2.0))
    assert "not drawn" not in compare_plots.compare_ratio(positive).to_json()


@pytest.mark.usefixtures("browser")
def test_ratio_figure_survives_negative_decode_ratios(tmp_path: Path) -> None:
    plots.save(compare_plots.compare_ratio(negative_ratios()), tmp_path / "ratio")
    dom = chromium(tmp_path / "ratio.html", tmp_path, "--virtual-time-budget=8000", "--dump-dom")
    assert 'class="marks"' in dom.stdout
    assert console_messages(dom.stderr) == []
