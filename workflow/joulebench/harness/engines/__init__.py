"""Inference engines behind one interface, so the harness measures every engine the same way."""

from __future__ import annotations

from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.harness.engines.base import Engine, EngineOptions, GenerationError

ENGINES = ("transformers", "vllm")


def make_engine(
    name: str,
    model_dir: str,
    precision: str,
    device: str,
    threads: int = 0,
    *,
    variant: dict[str, Any] | None = None,
    options: EngineOptions | None = None,
) -> Engine:
    """Build (but do not load) the engine called ``name``; heavy imports happen in load().

    ``variant`` is the variant's manifest (``variant.json``): which checkpoint to load and how.
    Without it the engine derives the load settings from the precision's defaults.
    """
    options = options or EngineOptions()
    if name == "transformers":
        from joulebench.harness.engines.hf_transformers import TransformersEngine

        return TransformersEngine(model_dir, precision, device, threads, variant=variant)
    if name == "vllm":
        from joulebench.harness.engines.vllm_offline import VllmEngine

        return VllmEngine(model_dir, precision, device, threads, variant=variant, options=options)
    raise ConfigError("engines", f"unknown engine '{name}'; allowed: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "EngineOptions", "GenerationError", "make_engine"]
