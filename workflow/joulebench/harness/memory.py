"""Memory feasibility: will a configuration fit, and was an error an out-of-memory error?

A study of hundreds of points must survive the ones that do not fit: they become ``infeasible``
records with the reason, never a crashed study or a job killed by the kernel's OOM killer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psutil

from joulebench.core.errors import JoulebenchError

#: Fraction of the free memory a configuration may plan to use.
HEADROOM = 0.9


class InfeasibleError(JoulebenchError):
    """A configuration cannot run here (does not fit in memory); the message says why."""


@dataclass(frozen=True)
class MemoryNeed:
    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def estimate_need(
    model_dir: Path, weight_bytes: int, dtype_bytes: int, batch: int, input_len: int, out_len: int
) -> MemoryNeed:
    """A coarse lower bound of one ``generate`` call's memory: weights + KV cache + activations."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    tokens = batch * (input_len + out_len)
    kv = 2 * layers * kv_heads * head_dim * tokens * dtype_bytes
    # prefill's widest activation: the MLP's intermediate tensor, plus last-token logits in fp32
    act = batch * input_len * cfg.get("intermediate_size", 4 * cfg["hidden_size"]) * dtype_bytes
    act += batch * cfg["vocab_size"] * 4
    return MemoryNeed(weight_bytes, kv, act)


def available_bytes(device: str) -> int:
    """Memory free for this job now: the GPU's free memory, or the host's available memory."""
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free)
    return int(psutil.virtual_memory().available)


def check_fits(need: MemoryNeed, available: int, device: str) -> None:
    """Raise InfeasibleError when ``need`` exceeds the headroom of ``available``."""
    if need.total > HEADROOM * available:
        gib = 1024**3
        raise InfeasibleError(
            f"needs at least {need.total / gib:.2f} GiB on {device} (weights "
            f"{need.weights / gib:.2f}, KV cache {need.kv_cache / gib:.2f}, activations "
            f"{need.activations / gib:.2f}); {available / gib:.2f} GiB available"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA OOM, Python MemoryError and torch's CPU allocator failures."""
    if isinstance(err, MemoryError):
        return True
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )
