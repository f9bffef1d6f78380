"""Model sources: synthesize from an architecture preset, download from the hub, or use a directory.

Every source ends as a normal Hugging Face model directory (config.json, safetensors weights,
tokenizer.json), so every engine loads it the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from joulebench.errors import ConfigError, ModelSourceError

log = logging.getLogger(__name__)

_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu"}
_QWEN2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu"}

#: Architecture presets. The large ones copy the published shapes of real models, so a
#: synthetic model with random weights costs the same compute and memory as the real one.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": {  # ~5M parameters: the CPU default
        **_LLAMA,
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 4096,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "dtype": "float32",
    },
    "small-llama": {  # ~100M parameters
        **_LLAMA,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "vocab_size": 8192,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "dtype": "float32",
    },
    "llama-3.2-1b": {
        **_LLAMA,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    },
    "llama-3.1-8b": {
        **_LLAMA,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    },
    "qwen2.5-0.5b": {
        **_QWEN2,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    },
    "qwen2.5-7b": {
        **_QWEN2,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    },
}

_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


def architecture(preset: str, overrides: dict[str, Any] | None = None, key: str = "") -> dict:
    """The full architecture dict of ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ConfigError(
            key or "models.architecture",
            f"unknown architecture '{preset}'; allowed: {', '.join(PRESETS)}",
        )
    arch = {**PRESETS[preset], **(overrides or {})}
    return arch


def parameter_count(arch: dict[str, Any]) -> int:
    """Parameters of a Llama- or Qwen2-shaped model from its architecture dict (no weights).

    Used to size jobs (memory requests) before any model exists; equals the count of the
    model transformers builds from the same dict.
    """
    if arch.get("model_type") not in ("llama", "qwen2"):
        raise ConfigError(
            "models.architecture",
            f"cannot count parameters of model_type {arch.get('model_type')!r}; "
            "allowed: llama, qwen2",
        )
    h, layers, vocab = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    head_dim = arch.get("head_dim") or h // arch["num_attention_heads"]
    q = arch["num_attention_heads"] * head_dim
    kv = arch["num_key_value_heads"] * head_dim
    attention = h * q + 2 * h * kv + q * h
    if arch["model_type"] == "qwen2":
        attention += q + 2 * kv  # q, k and v projections carry biases
    mlp = 3 * h * arch["intermediate_size"]
    per_layer = attention + mlp + 2 * h  # two RMSNorm weights
    embeddings = vocab * h * (1 if arch.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h  # + the final norm


def max_context(model_dir: Path) -> int | None:
    """The model's maximum sequence length, from its config.json, if stated."""
    cfg = json.loads((model_dir / "config.json").read_text())
    value = cfg.get("max_position_embeddings")
    return int(value) if value else None


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
    (tmp / "joulebench_source.json").write_text(
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
    _replace_dir(tmp, out_dir)
    return out_dir


def download(out_dir: Path, repo: str, revision: str) -> Path:
    """Download ``repo`` at the pinned ``revision`` from the Hugging Face Hub."""
    try:
        from huggingface_hub import snapshot_download

        tmp = out_dir.with_name(out_dir.name + ".partial")
        snapshot_download(repo_id=repo, revision=revision, local_dir=tmp)
    except Exception as err:  # the hub client raises many types; all mean the same to a user
        raise ModelSourceError(
            f"could not download '{repo}' at revision {revision} from the Hugging Face Hub: "
            f"{type(err).__name__}: {err}. If this machine is offline, download the model "
            "elsewhere and use `source: local` with its directory, or use `source: synthetic`."
        ) from err
    (tmp / "joulebench_source.json").write_text(
        json.dumps({"source": "hub", "repo": repo, "revision": revision}, indent=2)
    )
    _replace_dir(tmp, out_dir)
    return out_dir


def check_local(path: Path, key: str = "models.path") -> None:
    """Reject a local model directory that does not exist or lacks config.json."""
    if not path.is_dir():
        raise ConfigError(key, f"directory '{path}' does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(key, f"'{path}' has no config.json; it is not a model directory")


def link_local(out_dir: Path, path: Path) -> Path:
    """Expose a user's model directory under results/ as a symlink (nothing is copied)."""
    check_local(path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.is_symlink() or out_dir.exists():
        _remove(out_dir)
    out_dir.symlink_to(path.resolve(), target_is_directory=True)
    return out_dir


def checkpoint_quantization(model_dir: Path) -> dict[str, Any] | None:
    """The ``quantization_config`` a checkpoint's config.json declares (None: not quantized)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("quantization_config")


def check_declared_quantization(
    model_dir: Path, declared: str | None, key: str = "models[].quantization"
) -> None:
    """Reject a checkpoint whose quantization differs from ``models[i].quantization``.

    A quantized checkpoint that is not declared is rejected too: a cast precision would run it
    as something it is not.
    """
    found = (checkpoint_quantization(model_dir) or {}).get("quant_method")
    if found == declared:
        return
    where = f"{Path(model_dir) / 'config.json'}"
    if declared is None:
        raise ConfigError(
            key,
            f"is not set, but {where} is a {found} checkpoint (quantization_config.quant_method "
            f"'{found}'); declare `quantization: {found}` and run the prequantized precision",
        )
    raise ConfigError(
        key,
        f"declares '{declared}', but {where} "
        + (
            f"has quantization_config.quant_method '{found}'"
            if found is not None
            else "has no quantization_config (the checkpoint is not quantized)"
        ),
    )


def prepare(spec: dict[str, Any], out_dir: Path, key: str = "models[]") -> Path:
    """Prepare one model (a ``models:`` entry of the config, ``key``) into ``out_dir``.

    A hub or local checkpoint must ship the quantization its entry declares (and none if it
    declares none); see :func:`check_declared_quantization`.
    """
    source = spec["source"]
    if source == "synthetic":
        return synthesize(
            out_dir,
            spec["architecture"],
            spec.get("overrides"),
            spec.get("seed", 0),
            spec.get("tokenizer_vocab_size"),
        )
    if source == "hub":
        prepared = download(out_dir, spec["repo"], spec["revision"])
    elif source == "local":
        prepared = link_local(out_dir, Path(spec["path"]))
    else:
        raise ConfigError(f"{key}.source", f"unknown source '{source}'")
    try:
        check_declared_quantization(prepared, spec.get("quantization"), f"{key}.quantization")
    except ConfigError:
        _remove(prepared)  # a wrong checkpoint must not look prepared
        raise
    return prepared


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished directory into place, replacing an old one."""
    _remove(out_dir)
    tmp.rename(out_dir)
