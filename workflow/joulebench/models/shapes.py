"""What a model is, read without loading it: the architecture presets and their parameter counts,
and what a model directory's config.json declares (context length, shipped quantization).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from joulebench.core.errors import ConfigError

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


def check_local(path: Path, key: str = "models.path") -> None:
    """Reject a local model directory that does not exist or lacks config.json."""
    if not path.is_dir():
        raise ConfigError(key, f"directory '{path}' does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(key, f"'{path}' has no config.json; it is not a model directory")


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
