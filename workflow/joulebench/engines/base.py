"""The engine protocol the benchmark harness drives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from joulebench.precisions import Precision


class GenerationError(RuntimeError):
    """An engine produced something other than what was asked (e.g. fewer tokens)."""


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
    ) -> None:
        """Generate exactly ``new_tokens`` tokens per prompt (no early stop) and wait for them.

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
