"""A benchmark job's point id, ``bs{batch}_in{input}_out{output}[_tp{gpus}]``: built, parsed and
matched here only (the matrix names jobs with it, the rules constrain the ``point`` wildcard to
it, the forecast reads it back).

The id is canonical: positive whole numbers without leading zeros, and ``_tp`` only for two or
more GPUs, so every id parses to one point and that point builds the same id.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from joulebench.core.errors import JoulebenchError

_NUMBER = r"[1-9][0-9]*"
_GPUS = r"(?:[2-9]|[1-9][0-9]+)"  # tensor parallel of 1 is written as no suffix
_SHAPE = (("bs", "batch_size"), ("in", "input_len"), ("out", "output_len"))

#: The ``point`` wildcard's pattern for the rules (no groups: Snakemake would read a group as a
#: wildcard of its own).
WILDCARD = "_".join(f"{tag}{_NUMBER}" for tag, _ in _SHAPE) + f"(?:_tp{_GPUS})?"

_PARSER = re.compile(
    "_".join(f"{tag}(?P<{name}>{_NUMBER})" for tag, name in _SHAPE)
    + f"(?:_tp(?P<tensor_parallel>{_GPUS}))?"
)

#: What an id looks like, for error messages.
FORM = "bs<batch>_in<input>_out<output>[_tp<gpus>]"


class PointIdError(JoulebenchError, ValueError):
    """A string that is not a point id."""


class Point(NamedTuple):
    """One point of the matrix: a batch shape and the GPUs a job holds."""

    batch_size: int
    input_len: int
    output_len: int
    tensor_parallel: int = 1

    @property
    def id(self) -> str:
        return point_id(*self)


def point_id(batch_size: int, input_len: int, output_len: int, tensor_parallel: int = 1) -> str:
    """The id of a point: ``bs8_in512_out256``, or ``bs8_in512_out256_tp2`` on two GPUs."""
    values = {
        "batch_size": batch_size,
        "input_len": input_len,
        "output_len": output_len,
        "tensor_parallel": tensor_parallel,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PointIdError(
                f"a point's {name} must be a whole number of at least 1, got {value!r}"
            )
    tp = f"_tp{tensor_parallel}" if tensor_parallel > 1 else ""
    return f"bs{batch_size}_in{input_len}_out{output_len}{tp}"


def parse_point_id(text: str) -> Point:
    """The point ``text`` names; PointIdError (one line, naming the form) if it names none."""
    match = _PARSER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise PointIdError(
            f"{text!r} is not a point id; expected {FORM} with whole numbers from 1 (no leading "
            "zeros) and _tp only for 2 or more GPUs, e.g. bs8_in512_out256 or bs8_in512_out256_tp2"
        )
    return Point(*(int(v) if v else 1 for v in match.groups()))
