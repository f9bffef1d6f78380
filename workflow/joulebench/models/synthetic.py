"""Synthetic models: random weights in the shape of an architecture preset, with a BPE tokenizer
trained locally (no download), saved as a normal Hugging Face model directory.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.models.prepared import SOURCE_FILE, replace_dir
from joulebench.models.shapes import architecture

log = logging.getLogger(__name__)

_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


def _training_corpus() -> list[str]:
    """Plain English text available on every machine: the docstrings of the standard library."""
    import builtins
    import collections
    import json as json_mod
    import os
    import pathlib
    import string
    import textwrap

    texts: list[str] = []
    for module in (builtins, collections, json_mod, os, pathlib, string, textwrap, logging, shutil):
        for name in dir(module):
            doc = getattr(getattr(module, name, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                texts.append(doc)
    return texts


def train_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer locally and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=_SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **_SPECIAL_TOKENS)
    fast.save_pretrained(out_dir)


def synthesize(
    out_dir: Path,
    preset: str,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    tokenizer_vocab_size: int | None = None,
) -> Path:
    """Build a model with random weights from an architecture and save it with a local tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = architecture(preset, overrides)
    arch_kwargs = {k: v for k, v in arch.items() if k not in ("model_type", "dtype")}
    dtype = getattr(torch, arch["dtype"])
    config = AutoConfig.for_model(arch["model_type"], **arch_kwargs)
    vocab = tokenizer_vocab_size or min(config.vocab_size, 8192)
    if vocab > config.vocab_size:
        raise ConfigError(
            "models.tokenizer_vocab_size",
            f"{vocab} is larger than the model's vocab_size {config.vocab_size}",
        )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("training a %d-token BPE tokenizer", vocab)
    train_tokenizer(vocab, tmp)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    log.info("building %s with random weights (seed %d)", preset, seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %.1fM parameters, saving in %s", preset, n_params / 1e6, arch["dtype"])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / SOURCE_FILE).write_text(
        json.dumps(
            {
                "source": "synthetic",
                "architecture": preset,
                "overrides": overrides or {},
                "seed": seed,
                "parameters": n_params,
                "tokenizer_vocab_size": vocab,
            },
            indent=2,
        )
    )
    replace_dir(tmp, out_dir)
    return out_dir
