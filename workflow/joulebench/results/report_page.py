"""Building blocks of the standalone report pages (findings, compare): the page style and
tables as HTML and as Markdown."""

from __future__ import annotations

import html

import polars as pl

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2rem auto;padding:0 1rem;color:#222}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.verdict{padding:.1rem .5rem;border-radius:.3rem;font-weight:600}
.holds{background:#d4edda}.partly{background:#fff3cd}.fails{background:#f8d7da}
.missing{background:#e2e3e5}.recommendation{background:#d1ecf1}.inconclusive{background:#e7dcf5}
.audit{padding:.5rem;border-radius:.3rem;background:#eef3f8}.audit.flagged{background:#f8d7da}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}
.rule{color:#555;font-size:.9rem}.warn{background:#fff3cd;padding:.5rem;border-radius:.3rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
"""


def markdown_table(df: pl.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = [
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in df.iter_rows()
    ]
    return "\n".join([head, sep, *rows])


def html_table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row)
        + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
