"""The CLI's choice lists and defaults come from the registries that own them (issue #14): each
is compared here with the registry itself, and building the parser stays light."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys

import pytest
import yaml
from joulebench.cli import build_parser
from joulebench.cli.options import figure_suffixes
from joulebench.energy.choice import METERS
from joulebench.harness.engines import ENGINES
from joulebench.models.precisions import PRECISIONS
from joulebench.results import figures, forecast, plots
from joulebench.study.config import SCHEMA_PATH


def option(command: str, dest: str) -> argparse.Action:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[command]._actions if a.dest == dest)


def test_plot_offers_exactly_the_study_figures() -> None:
    assert set(option("plot", "figure").choices) == set(plots.FIGURES)


def test_plot_serving_offers_exactly_the_serving_figures() -> None:
    assert set(option("plot-serving", "figure").choices) == set(plots.SERVING_FIGURES)


def test_a_figure_not_in_the_registry_is_refused() -> None:
    figure = option("plot", "figure")
    assert "serving_energy_latency" in plots.SERVING_FIGURES
    assert "serving_energy_latency" not in figure.choices
    assert "time_energy_pareto" in figure.choices


def test_quantize_offers_the_precisions_that_write_a_checkpoint() -> None:
    writes = {name for name, p in PRECISIONS.items() if p.writes_checkpoint}
    assert writes  # the ct-* variants
    assert set(option("quantize", "precision").choices) == writes


def test_bench_engines_are_the_engine_registry() -> None:
    assert set(option("bench", "engine").choices) == set(ENGINES)


def test_bench_devices_are_the_schema_enum() -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert list(option("bench", "device").choices) == schema["properties"]["device"]["enum"]


def test_forecast_default_power_is_the_forecast_constant() -> None:
    action = option("forecast", "gpu_power_w")
    assert action.default is None  # the forecast's own default applies
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = sub.choices["forecast"].format_help()
    assert f"(default: {forecast.DEFAULT_GPU_POWER_W:g} W)" in " ".join(shown.split())
    default = inspect.signature(forecast.forecast).parameters["gpu_power_w"].default
    assert default == forecast.DEFAULT_GPU_POWER_W


def test_every_plotting_format_is_accepted_and_others_are_not() -> None:
    assert figure_suffixes(",".join(s.lstrip(".") for s in figures.FORMATS)) == figures.FORMATS
    with pytest.raises(argparse.ArgumentTypeError, match="allowed: html, png, svg"):
        figure_suffixes("html,gif")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["plot", "--help"], sorted(plots.FIGURES)),
        (["plot-serving", "--help"], sorted(plots.SERVING_FIGURES)),
        (["bench", "--help"], list(METERS)),
    ],
)
def test_help_lists_the_registry_names(argv: list[str], names: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "joulebench", *argv], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    assert names, f"{argv}: the registry is empty, so there is nothing to look for"
    for name in names:
        assert name in flat, (name, out)


def test_building_the_parser_imports_no_plotting_or_metering_code() -> None:
    """A `joulebench bench` or `validate` job reads no figure or meter registry to parse."""
    probe = (
        "import sys\n"
        "from joulebench.cli import build_parser\n"
        "build_parser().parse_args(['validate', 'config.yaml'])\n"
        "build_parser().parse_args(['bench', '--model-dir', 'm', '--out', 'o.json'])\n"
        "heavy = ('altair', 'joulebench.results.plots', 'joulebench.energy', 'torch')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


def test_a_section_given_as_json_gets_the_schema_defaults() -> None:
    from joulebench.cli.options import config_section

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["analysis"]["properties"]
    section = config_section("analysis", '{"confidence": 0.9}', "--analysis-json")
    assert section["confidence"] == 0.9
    defaults = {
        k: v["default"]
        for k, v in schema.items()
        if "default" in v and k != "confidence" and not isinstance(v["default"], dict)
    }
    assert defaults and {k: section[k] for k in defaults} == defaults


def test_a_partial_nested_section_gets_its_nested_defaults() -> None:
    """``--analysis-json '{"baseline": {"precision": "fp32"}}'`` keeps the baseline's default
    batch size (a shallow merge of the defaults lost it, and aggregate failed on a KeyError)."""
    from joulebench.cli.options import config_section

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["analysis"]["properties"]
    default_batch = schema["baseline"]["properties"]["batch_size"]["default"]
    given = '{"baseline": {"precision": "bf16"}}'
    section = config_section("analysis", given, "--analysis-json")
    assert section["baseline"] == {"precision": "bf16", "batch_size": default_batch}
