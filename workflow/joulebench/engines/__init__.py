"""Inference engines behind one interface, so the harness measures every engine the same way."""

from __future__ import annotations

from joulebench.engines.base import Engine, GenerationError
from joulebench.errors import ConfigError

ENGINES = ("transformers",)


def make_engine(name: str, model_dir: str, precision: str, device: str, threads: int = 0) -> Engine:
    """Build (but do not load) the engine called ``name``; heavy imports happen in load()."""
    if name == "transformers":
        from joulebench.engines.hf_transformers import TransformersEngine

        return TransformersEngine(model_dir, precision, device, threads)
    raise ConfigError("engines", f"unknown engine '{name}'; allowed: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "GenerationError", "make_engine"]
