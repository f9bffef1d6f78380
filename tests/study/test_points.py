"""The point id ``bs…_in…_out…[_tp…]``: one builder, one parser, one wildcard pattern."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from joulebench.core.errors import JoulebenchError
from joulebench.study.points import (
    WILDCARD,
    Point,
    PointIdError,
    parse_point_id,
    point_id,
)
from joulebench.study.specs import BenchSpec

RULES = Path(__file__).resolve().parents[2] / "workflow" / "rules"

#: Hand-written ids and the points they name.
KNOWN = {
    "bs1_in64_out32": Point(1, 64, 32, 1),
    "bs8_in512_out256": Point(8, 512, 256, 1),
    "bs8_in512_out256_tp2": Point(8, 512, 256, 2),
    "bs128_in4096_out1_tp16": Point(128, 4096, 1, 16),
    "bs10_in10_out10_tp10": Point(10, 10, 10, 10),
}

MALFORMED = [
    "",
    "bs8",
    "bs8_in512",
    "bs8_in512_out",
    "bs8_out256_in512",  # parts out of order
    "bs0_in512_out256",  # batch of 0
    "bs08_in512_out256",  # leading zero: would not round-trip
    "bs8_in512_out256_tp1",  # one GPU is written without a suffix
    "bs8_in512_out256_tp0",
    "bs8_in512_out256_tp",
    "bs8_in512_out256_tp2x",
    "bs8_in512_out256_pp2",
    " bs8_in512_out256",
    "bs8_in512_out256/",
    "bs-1_in512_out256",
    "bs8_in5.5_out256",
    "BS8_IN512_OUT256",
    "bs٣_in512_out256",  # an Arabic-Indic digit: \d would take it, int() too
]


@pytest.mark.parametrize(("text", "point"), KNOWN.items())
def test_hand_written_ids_parse_to_their_points(text: str, point: Point) -> None:
    assert parse_point_id(text) == point
    assert point_id(*point) == text
    assert point.id == text


@pytest.mark.parametrize("tp", [1, 2, 3, 8])
def test_round_trip_with_and_without_tensor_parallel(tp: int) -> None:
    text = point_id(4, 100, 7, tp)
    assert text.endswith(f"_tp{tp}") == (tp > 1)
    assert parse_point_id(text) == Point(4, 100, 7, tp)
    assert parse_point_id(text).id == text


def test_tensor_parallel_defaults_to_one() -> None:
    assert point_id(2, 3, 4) == "bs2_in3_out4"
    assert parse_point_id("bs2_in3_out4").tensor_parallel == 1


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_ids_are_rejected_with_the_form(text: str) -> None:
    with pytest.raises(PointIdError) as err:
        parse_point_id(text)
    message = str(err.value)
    assert repr(text) in message
    assert "bs<batch>_in<input>_out<output>[_tp<gpus>]" in message
    assert "\n" not in message
    assert isinstance(err.value, JoulebenchError), "reaches a user as one line"


@pytest.mark.parametrize("text", MALFORMED)
def test_the_wildcard_rejects_what_the_parser_rejects(text: str) -> None:
    assert re.fullmatch(WILDCARD, text) is None


@pytest.mark.parametrize("text", KNOWN)
def test_the_wildcard_matches_what_the_parser_reads(text: str) -> None:
    assert re.fullmatch(WILDCARD, text) is not None


def test_the_wildcard_has_no_groups() -> None:
    """Snakemake reads every group in a wildcard constraint as a wildcard of its own."""
    assert re.compile(WILDCARD).groups == 0


@pytest.mark.parametrize(
    "values", [(0, 1, 1), (1, 0, 1), (1, 1, -2), (1, 1, 1, 0), (1.0, 1, 1), (True, 1, 1)]
)
def test_the_builder_rejects_what_no_job_can_be(values: tuple) -> None:
    with pytest.raises(PointIdError, match="whole number of at least 1"):
        point_id(*values)


def test_a_bench_spec_is_named_by_its_point() -> None:
    spec = BenchSpec("s", "m", "vllm", "bf16", "cuda", 8, 512, 256, {}, tensor_parallel=2)
    assert spec.point == "bs8_in512_out256_tp2"
    assert spec.config_id == "m/bf16/vllm/bs8_in512_out256_tp2"
    assert parse_point_id(spec.point) == Point(8, 512, 256, 2)


def test_the_rules_take_the_point_pattern_from_here() -> None:
    """No second copy of the pattern in the rules: the constraint names this module's WILDCARD."""
    common = (RULES / "common.smk").read_text()
    assert "from joulebench.study.points import WILDCARD as POINT_WILDCARD" in common
    assert "point=POINT_WILDCARD," in common
    for path in RULES.glob("*.smk"):
        assert "_out\\d" not in path.read_text(), f"{path.name} keeps its own point pattern"
