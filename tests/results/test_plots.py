from pathlib import Path

import pytest
from conftest import make_record
from joulebench.results import analysis, plots, power_plots

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


def test_power_over_time_shades_the_phases(tmp_path: Path) -> None:
    import polars as pl
    from joulebench.energy.trace import frame

    record = make_record("bf16", 1, REPS)
    record["config_id"] = "m/bf16/transformers/bs1_in16_out8"
    record["energy_method"] = {
        "timeline": [
            {"label": "idle", "start_s": 0.0, "end_s": 1.0},
            {"label": "warmup", "start_s": 1.0, "end_s": 2.0},
        ],
        "idle": {"power_w": 60.0, "duration_s": 1.0},
        "power_fields": {"cuda:0": "NVML_FI_DEV_POWER_INSTANT"},
        "sample_hz": 20.0,
    }
    for run in record["runs"]:
        if run["phase"] == "prefill":
            run |= {"start_s": 2.0, "end_s": 2.1, "calls": [[2.0, float("nan"), 2.1]]}
        if run["phase"] == "full":
            run |= {"start_s": 2.1, "end_s": 3.0, "calls": [[2.1, 2.2, 3.0]]}
    intervals = power_plots.intervals(record)
    assert intervals.filter(pl.col("interval") == "decode").row(0) == ("decode", 2.2, 3.0)
    assert set(intervals["interval"]) == {"idle", "warmup", "prefill", "decode"}
    trace = frame(
        [
            {
                "t_s": i / 20,
                "device": "cuda:0",
                "source": "nvml",
                "power_w": 60.0 + i,
                "power_field": "NVML_FI_DEV_POWER_INSTANT",
                "interpolation": "instant",
            }
            for i in range(61)
        ]
    )
    html, png, svg = plots.save(plots.power_over_time(record, trace), tmp_path / "power")
    assert "<svg" in svg.read_text()
    text = html.read_text()
    assert "Power over time" in text and "decode" in text and "idle 60.0 W" in text
    assert "[estimate]" in text  # make_record's source is the estimate
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_power_chart_of_an_infeasible_run_says_why(tmp_path: Path) -> None:
    from joulebench.energy.trace import empty_frame

    record = {
        "status": "infeasible",
        "reason": "CUDA out of memory",
        "config_id": "m/fp32/transformers/bs64_in16_out8",
        "meter": {"source": None},
        "runs": [],
        "energy_method": None,
    }
    html, _, _ = plots.save(plots.power_over_time(record, empty_frame()), tmp_path / "p")
    assert "infeasible: CUDA out of memory" in html.read_text()


def test_html_only_without_the_renderer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without vl-convert a figure is HTML alone, which loads Vega from its CDN when opened."""
    from joulebench.core import optional

    records = [make_record(p, b, REPS) for p in ("fp32", "bf16") for b in (1, 4)]
    summary = analysis.summarize(analysis.measurements(records))
    chart = plots.FIGURES["energy_per_token_vs_batch"](summary)
    (inline,) = plots.save(chart, tmp_path / "inline", (".html",))
    monkeypatch.setattr(optional, "renderer_available", lambda: False)
    (cdn,) = plots.save(chart, tmp_path / "cdn", (".html",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdn.html", "inline.html"]
    assert "cdn.jsdelivr.net/npm/vega" not in inline.read_text()
    assert "cdn.jsdelivr.net/npm/vega" in cdn.read_text()
