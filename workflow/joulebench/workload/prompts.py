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

from joulebench.core.errors import ConfigError

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


def word_tokens(tokenizer: Any, limit: int = 4000) -> list[str]:
    """Tokens that are one space-led word and encode back to themselves, alone and in a row.

    Pre-tokenizers split text at spaces, so a string of such words encodes to exactly one token
    per word: prompts of an exact length without trial and error.
    """
    special = set(tokenizer.all_special_ids)
    words = []
    for token_id in range(min(len(tokenizer), 50_000)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        is_word = len(text) > 2 and text[0] == " " and text[1:].isalpha() and text[1:].isascii()
        if is_word and tokenizer.encode(text, add_special_tokens=False) == [token_id]:
            words.append(text)
            if len(words) >= limit:
                break
    return words


def synthetic(
    tokenizer: Any, n: int, input_lens: list[int] | int, output_lens: list[int] | int, seed: int
) -> list[Prompt]:
    """``n`` prompts of random words, each exactly its input length by the model's tokenizer."""
    rng = np.random.default_rng(seed)
    words = word_tokens(tokenizer)
    if len(words) < 20:
        raise ConfigError(
            "serving.prompts",
            "the tokenizer has too few word tokens for synthetic prompts; use a prompt file",
        )
    in_lens = [input_lens] * n if isinstance(input_lens, int) else list(input_lens)
    out_lens = [output_lens] * n if isinstance(output_lens, int) else list(output_lens)
    prompts = []
    for length, out in zip(in_lens, out_lens, strict=True):
        text = "".join(rng.choice(words, size=int(length)))  # leading space kept: exact
        got = len(tokenizer.encode(text, add_special_tokens=False))
        if got != length:  # the verification, not a correction: say so
            log.warning("synthetic prompt has %d tokens instead of %d", got, length)
        prompts.append(Prompt(text, got, int(out)))
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
