"""Studies side by side: the same study run on several machines, in one table and one set of
figures coloured by study (host, GPU, threads), with each study's energy per token relative to
the first one and a seeded bootstrap interval of that ratio.

A study is a results directory (``results/`` or the work directory holding it) with
``tables/summary.parquet`` and ``tables/measurements.parquet``; its ``records/`` describe where it
ran (the provenance audit), and its label says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from joulebench.core.errors import JoulebenchError
from joulebench.core.inputs import ArgumentError
from joulebench.results import audit
from joulebench.results.report_page import PAGE_CSS, html_table
from joulebench.results.stats import Interval, bootstrap_means

#: Columns that make rows of two studies the same measurement (not the study, host or device).
KEY = ["model", "engine", "precision", "batch_size", "input_len", "output_len", "phase"]


@dataclass
class Study:
    """One results directory: its tables, audit and label."""

    path: Path
    label: str
    summary: pl.DataFrame
    tidy: pl.DataFrame
    audit: audit.Audit | None


def _results_dir(path: Path) -> Path:
    for candidate in (path, path / "results"):
        if (candidate / "tables" / "summary.parquet").is_file():
            return candidate
    raise ArgumentError(
        "results",
        f"'{path}' has no tables/summary.parquet (nor results/tables/summary.parquet); "
        "give a results directory of a study that has run",
    )


def _describe(summary: pl.DataFrame, result: audit.Audit | None) -> str:
    """Host, GPU (or CPU threads) and energy source of a study, as its label."""
    rows = result.rows if result is not None else summary
    hosts = ", ".join(sorted(rows["host"].drop_nulls().unique()))
    parts = [hosts or "unknown host"]
    gpus = sorted(rows["gpu"].drop_nulls().unique()) if result is not None else []
    if not gpus and "gpu_name" in summary.columns:
        gpus = sorted(summary["gpu_name"].drop_nulls().unique())
    if gpus:
        parts.append(", ".join(gpus))
    elif result is not None:
        threads = sorted(result.rows["cpu_threads"].drop_nulls().unique())
        if threads:
            n = ", ".join(str(t) for t in threads)
            parts.append(f"{n} thread{'s' if threads != [1] else ''}")
    return " · ".join(parts)


def load_study(path: str | Path) -> Study:
    root = _results_dir(Path(path))
    summary = pl.read_parquet(root / "tables" / "summary.parquet").filter(status="ok")
    measurements = root / "tables" / "measurements.parquet"
    if not measurements.is_file():
        raise ArgumentError(
            "results", f"'{root}' has no tables/measurements.parquet (the repetitions)"
        )
    tidy = pl.read_parquet(measurements)
    records = root / "records"
    result = audit.audit(audit.load([records])) if records.is_dir() else None
    return Study(root, _describe(summary, result), summary, tidy, result)


def labels_unique(studies: list[Study]) -> None:
    """Studies with the same description get their directory added, so colours tell them apart."""
    labels = [s.label for s in studies]
    for s in studies:
        if labels.count(s.label) > 1:
            s.label = (
                f"{s.label} ({s.path.parent.name if s.path.name == 'results' else s.path.name})"
            )
    if len({s.label for s in studies}) < len(studies):
        for i, s in enumerate(studies):
            s.label = f"{s.label} #{i + 1}"


def _reps(study: Study) -> dict[tuple[object, ...], list[float]]:
    j = pl.col("j_per_token")
    grouped = (
        study.tidy.filter(j.is_not_null() & j.is_finite())
        .group_by(KEY)
        .agg(j.sort())  # sorted: the draws do not depend on row order
    )
    return {tuple(r[:-1]): r[-1] for r in grouped.select(*KEY, "j_per_token").rows()}


def table(studies: list[Study], confidence: float = 0.95) -> pl.DataFrame:
    """One row per study × measurement: J/token and its CI, tokens/s, and the ratio of J/token
    to the first study's at the same measurement, with a bootstrap CI over both studies'
    repetitions (null where the first study lacks the measurement)."""
    reference = studies[0]
    ref_reps = _reps(reference)
    parts = []
    for study in studies:
        reps = _reps(study)
        rows = study.summary.select(
            *KEY,
            "n",
            "j_per_token_mean",
            "j_per_token_ci_low",
            "j_per_token_ci_high",
            "tokens_per_s_mean",
            "meter_source",
        ).with_columns(study=pl.lit(study.label), results=pl.lit(str(study.path)))
        ratio, low, high = [], [], []
        for key in rows.select(KEY).rows():
            mine, ref = reps.get(key), ref_reps.get(key)
            if not mine or not ref:
                ratio.append(None), low.append(None), high.append(None)
                continue
            tag = "|".join(str(k) for k in key)
            d_mine = bootstrap_means(mine, f"{study.label}|{tag}")
            d_ref = bootstrap_means(ref, f"{reference.label}|{tag}")
            iv = Interval.from_draws(
                float(np.mean(mine) / np.mean(ref)),
                d_mine / d_ref,
                min(len(mine), len(ref)),
                confidence,
            )
            ratio.append(iv.estimate), low.append(iv.low), high.append(iv.high)
        parts.append(
            rows.with_columns(
                vs=pl.lit(reference.label),
                j_per_token_ratio=pl.Series(ratio, dtype=pl.Float64),
                ratio_ci_low=pl.Series(low, dtype=pl.Float64),
                ratio_ci_high=pl.Series(high, dtype=pl.Float64),
            )
        )
    out = pl.concat(parts, how="vertical_relaxed")
    return (
        out.join(
            out.filter(study=reference.label).select(*KEY, ref_tps="tokens_per_s_mean"),
            on=KEY,
            how="left",
        )
        .with_columns(
            tokens_per_s_ratio=pl.col("tokens_per_s_mean") / pl.col("ref_tps"),
            confidence=pl.lit(confidence),
        )
        .drop("ref_tps")
        .sort("study", *KEY)
    )


def headline(studies: list[Study], confidence: float = 0.95) -> list[str]:
    """Per study after the first: the median J/token ratio over shared measurements, with its
    bootstrap interval (every measurement's repetitions resampled)."""
    lines = []
    reference = studies[0]
    ref_reps = _reps(reference)
    for study in studies[1:]:
        reps = _reps(study)
        shared = [k for k in reps if k in ref_reps]
        if not shared:
            lines.append(f"{study.label}: no measurement in common with {reference.label}")
            continue
        draws = np.vstack(
            [
                bootstrap_means(reps[k], f"{study.label}|{'|'.join(map(str, k))}")
                / bootstrap_means(ref_reps[k], f"{reference.label}|{'|'.join(map(str, k))}")
                for k in shared
            ]
        )
        est = float(np.median([np.mean(reps[k]) / np.mean(ref_reps[k]) for k in shared]))
        n = min(min(len(reps[k]), len(ref_reps[k])) for k in shared)
        iv = Interval.from_draws(est, np.median(draws, axis=0), n, confidence)
        side = iv.versus(1.0)
        word = {True: "more", False: "less", None: "indistinguishable from the same"}[side]
        lines.append(
            f"{study.label} uses {iv.text()} the energy per token of {reference.label} "
            f"(median over {len(shared)} measurements: {word} energy)"
        )
    return lines


def page(
    studies: list[Study], compared: pl.DataFrame, lines: list[str], svgs: dict[str, str]
) -> str:
    """A standalone comparison page: studies, their audits, headline ratios, figures, table."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>joulebench comparison</title><style>{PAGE_CSS}</style></head><body>",
        "<h1>joulebench comparison</h1><ul>",
    ]
    for s in studies:
        verdict = s.audit.verdict if s.audit is not None else "no records: not audited"
        parts.append(f"<li><b>{e(s.label)}</b> ({e(str(s.path))}): {e(verdict)}</li>")
    parts.append("</ul>")
    parts += [f"<p>{e(line)}</p>" for line in lines]
    for name, svg in svgs.items():
        parts.append(f"<figure id='{e(name)}'>{svg}<figcaption>{e(name)}</figcaption></figure>")
    shown = compared.select(
        "study",
        *KEY,
        "n",
        pl.col("j_per_token_mean").round(6),
        pl.col("j_per_token_ratio").round(3),
        pl.col("ratio_ci_low").round(3),
        pl.col("ratio_ci_high").round(3),
        pl.col("tokens_per_s_ratio").round(3),
    )
    parts += [html_table(shown), "</body></html>"]
    return "\n".join(parts)


def run(paths: list[str], out_dir: Path, confidence: float = 0.95) -> list[Path]:
    """`joulebench compare`: the table (parquet, csv), figures (html, png, svg) and a page."""
    from joulebench.core.atomic import write_text, write_with
    from joulebench.results import plots

    if len(paths) < 2:
        raise ArgumentError("results", "compare needs at least two results directories")
    if not 0 < confidence < 1:
        raise ArgumentError(
            "--confidence", f"must lie between 0 and 1 (exclusive), got {confidence}"
        )
    studies = [load_study(p) for p in paths]
    labels_unique(studies)
    compared = table(studies, confidence)
    if compared.filter(
        pl.col("j_per_token_ratio").is_not_null(), pl.col("study") != pl.col("vs")
    ).is_empty():
        raise JoulebenchError(
            f"the studies share no measurement (same {', '.join(KEY)}) with {paths[0]}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "comparison.parquet", out_dir / "comparison.csv"]
    write_with(written[0], compared.write_parquet)
    write_with(written[1], compared.write_csv)
    svgs = {}
    for name, make in plots.COMPARE_FIGURES.items():
        chart = make(compared)
        written += plots.save(chart, out_dir / name)
        svgs[name] = (out_dir / f"{name}.svg").read_text()
    lines = headline(studies, confidence)
    write_text(out_dir / "comparison.html", page(studies, compared, lines, svgs))
    written.append(out_dir / "comparison.html")
    for line in lines:
        print(line)
    return written
