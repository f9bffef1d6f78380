from pathlib import Path

from conftest import make_record
from joulebench import analysis, plots

REPS = [
    {"pe": 1.0, "pt": 0.1, "fe": 11.0, "ft": 1.1},
    {"pe": 1.2, "pt": 0.1, "fe": 12.0, "ft": 1.2},
]


def test_figures_render_to_html_and_png(tmp_path: Path) -> None:
    records = [make_record(p, b, REPS) for p in ("fp32", "bf16") for b in (1, 4)]
    summary = analysis.summarize(analysis.measurements(records))
    for name, figure in plots.FIGURES.items():
        written = plots.save(figure(summary), tmp_path / name)
        html, png, svg = written
        assert svg.read_text().startswith("<svg")
        assert "vega" in html.read_text()
        assert "estimate" in html.read_text()  # the source is named in the figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.{e}" for n in plots.FIGURES for e in ("html", "png", "svg")
    )
