"""What several commands share: registry names read when needed, the figure-format option, a
config section passed as JSON, and saving a chart."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from joulebench.core import inputs
from joulebench.core.errors import ConfigError

log = logging.getLogger("joulebench")


class Names:
    """The names of a registry, read from it only when argparse needs them.

    Usable as ``choices=`` (checking a value, listing them in errors and in help through
    ``%(choices)s``; give a ``metavar``, or argparse lists them while building the parser) and
    in help text (``str`` joins them), so building the parser imports no plotting or metering
    code: a `joulebench bench` job does not pay for altair to have ``plot``'s choices.
    """

    def __init__(self, read: Callable[[], Iterable[str]]) -> None:
        self._read = read

    def _names(self) -> list[str]:
        return list(self._read())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __len__(self) -> int:
        return len(self._names())

    def __str__(self) -> str:
        return ", ".join(self._names())


def names_option(
    parser: argparse.ArgumentParser, *flags: str, names: Names, help: str, **kwargs: Any
) -> argparse.Action:
    """Add an option whose ``help`` may say ``%(names)s``: the registry's names, joined only
    when help is shown (argparse fills ``%(...)s`` from the option's attributes)."""
    action = parser.add_argument(*flags, help=help, **kwargs)
    action.names = names  # type: ignore[attr-defined]
    return action


def precision_names() -> list[str]:
    """Every precision variant's name, from the precision registry."""
    from joulebench.models.precisions import PRECISIONS

    return list(PRECISIONS)


def checkpoint_precisions() -> list[str]:
    """The variants whose checkpoint the workflow writes (`joulebench quantize`)."""
    from joulebench.models.precisions import PRECISIONS

    return [p.name for p in PRECISIONS.values() if p.writes_checkpoint]


def figure_formats() -> list[str]:
    """The file formats a figure can be saved in (``html``, ...), from the plotting module."""
    from joulebench.results import figures

    return [suffix.lstrip(".") for suffix in figures.FORMATS]


FIGURE_FORMATS = Names(figure_formats)


def figure_suffixes(value: str) -> tuple[str, ...]:
    """``html,png`` → ``(".html", ".png")``, each checked."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in FIGURE_FORMATS:
            raise argparse.ArgumentTypeError(
                f"unknown figure format '{name}'; allowed: {FIGURE_FORMATS}"
            )
    return tuple(f".{name}" for name in names)


def add_formats(parser: argparse.ArgumentParser) -> None:
    """``--formats`` of every plotting command (the config's figure_formats)."""
    names_option(
        parser,
        "--formats",
        names=FIGURE_FORMATS,
        dest="formats",
        metavar="FORMAT[,FORMAT...]",
        type=figure_suffixes,
        help="files to write, from %(names)s (png and svg need vl-convert-python; default: all)",
    )


def save_chart(chart: Any, args: argparse.Namespace) -> None:
    """Write ``chart`` to ``--out-stem`` in ``--formats`` (all formats when not given)."""
    from joulebench.results import figures, plots

    formats = figures.FORMATS if args.formats is None else args.formats
    for path in plots.save(chart, Path(args.out_stem), formats):
        log.info("wrote %s", path)


def config_section(section: str, text: str | None, argument: str) -> dict[str, Any]:
    """A config section passed as JSON (``--analysis-json``), checked against the schema and
    with its defaults filled in; an absent argument gives the defaults."""
    from joulebench.study.config import config_section as checked

    given = inputs.json_object(text, argument) if text else {}
    try:
        return checked(section, given)
    except ConfigError as err:
        where = "the object" if err.key == "<top>" else err.key
        raise inputs.ArgumentError(argument, f"{where}: {err.message}") from None
