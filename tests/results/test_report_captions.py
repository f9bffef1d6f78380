"""One report caption per figure: every figure of the report has its own caption file, used by
exactly one rule, the rule that draws that figure; no caption (of a figure or a table) is shared.

The rules are read as text: each top-level ``rule NAME:`` or ``use rule A as NAME with:`` block,
up to the next top-level statement, with the ``caption="..."`` literals inside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from joulebench.results import figures

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
CAPTIONS = REPO / "workflow" / "report" / "figures"

RULE_HEADER = re.compile(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):[ \t]*$")
CAPTION = re.compile(r"\bcaption\s*=\s*([^,)\n]+)")
STEM = re.compile(r"\b(?:figure_outputs|report)\(\s*\"([^\"]+)\"")

#: Where each figure's files go: study-wide figures one stem each (a wildcard there would share
#: one caption among figures), per-run figures one folder.
WRITES = {name: f"results/plots/{name}" for name in (*figures.FIGURES, *figures.SERVING_FIGURES)}
WRITES |= {
    figures.POWER_FIGURE: "results/plots/power/",
    figures.SERVING_POWER_FIGURE: "results/plots/serving_power/",
}


def rule_blocks(text: str) -> dict[str, str]:
    """Rule name → the text of its block (a rule ends at the next top-level statement)."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        header = RULE_HEADER.match(line)
        if header:
            name = header[1] or header[2]
            blocks[name] = ""
        elif line and not line[0].isspace() and not line.startswith("#"):
            name = None
        elif name is not None:
            blocks[name] += line + "\n"
    return blocks


def captions_in_rules(files: list[Path] = RULE_FILES) -> list[tuple[str, str, str | None]]:
    """(rule, caption path relative to the repository, first output stem) for every caption."""
    found = []
    for path in files:
        for rule, block in rule_blocks(path.read_text()).items():
            for value in CAPTION.findall(block):
                literal = re.fullmatch(r"\"([^\"{}]+)\"", value.strip())
                assert literal, f"rule {rule} ({path.name}): caption {value} is not a plain path"
                caption = (path.parent / literal[1]).resolve().relative_to(REPO).as_posix()
                stem = STEM.search(block)
                found.append((rule, caption, stem[1] if stem else None))
    return found


def figure_of(caption: str) -> str | None:
    folder = CAPTIONS.relative_to(REPO).as_posix() + "/"
    return caption.removeprefix(folder).removesuffix(".rst") if caption.startswith(folder) else None


def test_the_parse_finds_the_rules_and_their_captions() -> None:
    text = (
        'rule a:\n    output:\n        report("x.csv", caption="../report/a.rst"),\n'
        "\n\ndef helper():\n    caption = 1\n\n\n"
        "use rule a as b with:\n    output:\n        **figure_outputs(\n"
        '            "results/plots/b",\n            caption="../report/figures/b.rst",\n'
        "        ),\n"
    )
    smk = REPO / "workflow" / "rules" / "example.smk"
    assert rule_blocks(text).keys() == {"a", "b"}
    assert "helper" not in "".join(rule_blocks(text).values())

    class Text:
        parent = smk.parent

        def read_text(self) -> str:
            return text

    assert captions_in_rules([Text()]) == [  # type: ignore[list-item]
        ("a", "workflow/report/a.rst", "x.csv"),
        ("b", "workflow/report/figures/b.rst", "results/plots/b"),
    ]


def test_every_report_figure_has_exactly_one_caption_file() -> None:
    files = {p.stem for p in CAPTIONS.glob("*.rst")}
    assert len(figures.REPORT_FIGURES) >= 5, "the report has (almost) no figures to check"
    assert set(figures.REPORT_FIGURES) - files == set(), "figures without a caption file"
    assert files - set(figures.REPORT_FIGURES) == set(), "caption files of no figure"
    assert len(set(figures.REPORT_FIGURES)) == len(figures.REPORT_FIGURES)
    texts = [(CAPTIONS / f"{name}.rst").read_text().strip() for name in figures.REPORT_FIGURES]
    assert all(texts) and len(set(texts)) == len(texts), "an empty or copied caption"


def test_no_caption_is_shared_between_rules() -> None:
    used: dict[str, list[str]] = {}
    # figures and the summary, serving, provenance and findings tables at least
    assert len(captions_in_rules()) >= len(figures.REPORT_FIGURES) + 4, "parsed too few captions"
    for rule, caption, _ in captions_in_rules():
        used.setdefault(caption, []).append(rule)
        assert (REPO / caption).is_file(), f"rule {rule}: caption {caption} does not exist"
    shared = {caption: rules for caption, rules in used.items() if len(rules) > 1}
    assert shared == {}


@pytest.mark.parametrize("figure", figures.REPORT_FIGURES)
def test_each_figure_caption_is_used_by_the_rule_that_draws_it(figure: str) -> None:
    drawn_by = [
        (rule, stem) for rule, caption, stem in captions_in_rules() if figure_of(caption) == figure
    ]
    assert len(drawn_by) == 1, f"{figure}: its caption is used by {drawn_by or 'no rule'}"
    rule, stem = drawn_by[0]
    where = WRITES[figure]
    ok = stem is not None and (stem.startswith(where) if where.endswith("/") else stem == where)
    assert ok, f"rule {rule} carries the caption of {figure} but writes {stem}, not {where}"
    if not where.endswith("/"):  # the report entry is labelled with the figure it shows
        block = next(
            b for f in RULE_FILES for r, b in rule_blocks(f.read_text()).items() if r == rule
        )
        assert f'labels={{"figure": "{figure}"}}' in block, f"rule {rule}: label is not {figure}"


def test_compare_figures_stay_out_of_the_report() -> None:
    in_rules = {figure_of(caption) for _, caption, _ in captions_in_rules()}
    assert in_rules & set(figures.COMPARE_FIGURES) == set()
