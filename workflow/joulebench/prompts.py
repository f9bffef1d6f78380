"""Prompts for serving experiments: synthetic text of an exact token length, or a local file.

Synthetic prompts are random non-special tokens decoded with the model's own tokenizer and
trimmed until re-encoding gives exactly the asked length, so the server sees the prompt length
the experiment names. Files (JSONL, CSV, parquet) give a ``prompt`` column and optionally an
``output_len`` column; nothing is downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from joulebench.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Prompt:
    text: str
    input_len: int  # tokens, by the model's tokenizer
    output_len: int  # tokens asked for


def read_table(path: Path, key: str) -> pl.DataFrame:
    """A JSONL, CSV or parquet file as a polars table (the format is chosen by suffix)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(key, f"{path}: unknown format; allowed suffixes: {', '.join(FORMATS)}")
    if not path.is_file():
        raise ConfigError(key, f"file '{path}' does not exist")
    if fmt == "jsonl":
        return pl.read_ndjson(path)
    if fmt == "csv":
        return pl.read_csv(path)
    return pl.read_parquet(path)


def _exact_length_text(tokenizer: Any, ids: list[int], length: int) -> tuple[str, int]:
    """Decode ``ids`` and trim until the text re-encodes to ``length`` tokens (or just below)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for _ in range(20):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) <= length:
            return text, len(encoded)
        text = tokenizer.decode(encoded[:length], skip_special_tokens=True)
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return text, len(encoded)


def synthetic(
    tokenizer: Any, n: int, input_lens: list[int] | int, output_lens: list[int] | int, seed: int
) -> list[Prompt]:
    """``n`` prompts of random non-special tokens, each exactly its input length if possible."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    allowed = np.array([i for i in range(len(tokenizer)) if i not in special])
    in_lens = [input_lens] * n if isinstance(input_lens, int) else list(input_lens)
    out_lens = [output_lens] * n if isinstance(output_lens, int) else list(output_lens)
    prompts = []
    for length, out in zip(in_lens, out_lens, strict=True):
        best = ("", -1)
        for _ in range(8):  # a few redraws when trimming lands below the target
            ids = rng.choice(allowed, size=length + 4).tolist()
            text, got = _exact_length_text(tokenizer, ids, length)
            best = max(best, (text, got), key=lambda p: p[1])
            if got == length:
                break
        if best[1] != length:
            log.warning("synthetic prompt has %d tokens instead of %d", best[1], length)
        prompts.append(Prompt(best[0], best[1], int(out)))
    return prompts


def from_file(
    path: Path,
    tokenizer: Any,
    n: int,
    output_len: int,
    prompt_field: str = "prompt",
    output_len_field: str | None = "output_len",
) -> list[Prompt]:
    """The first ``n`` prompts of a file (cycled if it has fewer rows), lengths measured."""
    table = read_table(path, "serving.prompts.path")
    if prompt_field not in table.columns:
        raise ConfigError(
            "serving.prompts.prompt_field",
            f"{path} has no column '{prompt_field}'; columns: {', '.join(table.columns)}",
        )
    if table.height == 0:
        raise ConfigError("serving.prompts.path", f"{path} has no rows")
    texts = table[prompt_field].cast(str).to_list()
    outs = (
        table[output_len_field].cast(int).to_list()
        if output_len_field and output_len_field in table.columns
        else [output_len] * table.height
    )
    prompts = []
    for i in range(n):
        text = texts[i % len(texts)]
        ids = tokenizer.encode(text, add_special_tokens=False)
        prompts.append(Prompt(text, len(ids), int(outs[i % len(outs)])))
    return prompts
