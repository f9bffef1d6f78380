"""The engine protocol the benchmark harness drives."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from joulebench.core.errors import ConfigError, JoulebenchError
from joulebench.models.precisions import Precision, check_support, get_precision
from joulebench.models.variants import load_settings


class GenerationError(JoulebenchError):
    """An engine produced something other than what was asked (e.g. fewer tokens)."""


@dataclass(frozen=True)
class EngineOptions:
    """What an engine may size itself by, beyond the model and variant.

    The transformers engine needs none of it; vLLM sizes its scheduler (``max_num_seqs`` =
    ``batch_size``), context and KV cache by it, and reads ``vllm`` (the config's section).
    """

    batch_size: int = 1
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    seed: int = 0
    vllm: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` or ``cpu``; reject ``cuda`` where torch sees no GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' was asked for but torch sees no CUDA GPU in this job")
    return device


def compute_capability(device: str) -> float | None:
    """The CUDA compute capability of the job's first GPU (None on CPU)."""
    if device != "cuda":
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return major + minor / 10


@dataclass(frozen=True)
class LoadPlan:
    """What an engine loads and how, checked against the precision registry before loading."""

    precision: Precision
    device: str
    #: a converted checkpoint (ct-* variants) or the source one
    load_dir: str
    #: dtype and quantization settings (the variant manifest's ``load``)
    settings: dict[str, Any]


def plan_load(
    engine: str, model_dir: str, precision: str, device: str, variant: dict[str, Any] | None
) -> LoadPlan:
    """Resolve the device and checkpoint, and reject a combination ``engine`` cannot run."""
    spec = get_precision(precision)
    device = resolve_device(device)
    variant = variant or {}
    load_dir = variant.get("checkpoint") or model_dir
    check_support(
        spec,
        engine,
        device,
        key="precision",
        compute_capability=compute_capability(device),
        checkpoint_format=checkpoint_quant_method(load_dir),
    )
    return LoadPlan(spec, device, load_dir, variant.get("load") or load_settings(spec))


def process_peak_rss() -> dict[str, Any]:
    """This process's peak resident memory (what a CPU engine's peak memory is)."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bytes": int(rss_kib) * 1024, "kind": "process_peak_rss"}


def checkpoint_quant_method(model_dir: str) -> str | None:
    """``quantization_config.quant_method`` of a checkpoint's config.json (None: unquantized)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    method = (json.loads(path.read_text()).get("quantization_config") or {}).get("quant_method")
    return str(method) if method else None


def random_prompt_ids(
    tokenizer: Any, vocab_size: int, batch_size: int, input_len: int, seed: int
) -> list[list[int]]:
    """``batch_size`` prompts of exactly ``input_len`` token ids, no special tokens, seeded.

    Every engine draws its prompts here, so the same seed gives the same prompts everywhere.
    """
    import torch

    vocab = min(len(tokenizer), vocab_size)
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(allowed), (batch_size, input_len), generator=gen)
    return allowed[picks].tolist()


class Engine(Protocol):
    """A loaded model that generates a fixed number of tokens for a fixed batch of prompts."""

    name: str
    device: str
    precision: Precision

    def load(self) -> None:
        """Load weights onto the device (not measured)."""

    def make_inputs(self, batch_size: int, input_len: int, seed: int) -> Any:
        """A batch of prompts of exactly ``input_len`` tokens each, reproducible from ``seed``."""

    def generate(
        self, inputs: Any, new_tokens: int, on_first_token: Callable[[], None] | None = None
    ) -> list[int]:
        """Generate exactly ``new_tokens`` tokens per prompt (no early stop) and wait for them;
        returns the real new tokens of each prompt. Any prompt with fewer (an EOS, padding) is
        a GenerationError: J/token must never divide by tokens that were not made.

        ``on_first_token`` is called once, as soon as the first new token is on the host: the
        boundary between prefill and decode.
        """

    def synchronize(self) -> None:
        """Wait until queued device work is done (called at every window edge)."""

    def reset_peak_memory(self) -> None: ...

    def peak_memory(self) -> dict[str, Any]:
        """Peak memory since the last reset: bytes and what kind of figure it is."""

    def describe(self) -> dict[str, Any]:
        """Engine facts worth recording (library version, dtype, threads, ...)."""
