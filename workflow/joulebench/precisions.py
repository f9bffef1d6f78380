"""Precision and quantization variants: what each name means, where it runs, how it is applied.

A variant is either an on-load setting (a dtype cast, or a transform applied after loading) or,
for formats added later, a checkpoint written once by the workflow. Every variant is described by
a manifest (``variant.json``) that the benchmark jobs read, so a benchmark never guesses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Precision:
    """One named precision variant."""

    name: str
    kind: str  # "cast" (load in dtype) or "torch-dynamic-int8" (quantize Linear layers on load)
    dtype: str  # dtype the weights are loaded in (and, for casts, computed in)
    devices: tuple[str, ...]  # devices that can run it
    weight_bits: int
    library: str  # the library that implements it
    description: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "cast", "float32", ("cpu", "cuda"), 32, "torch", "IEEE float32."),
        Precision("fp16", "cast", "float16", ("cpu", "cuda"), 16, "torch", "IEEE float16."),
        Precision("bf16", "cast", "bfloat16", ("cpu", "cuda"), 16, "torch", "bfloat16."),
        Precision(
            "cpu-int8",
            "torch-dynamic-int8",
            "float32",
            ("cpu",),
            8,
            "torch",
            "torch dynamic quantization: int8 weights of every nn.Linear, activations quantized "
            "per batch at run time, fp32 elsewhere.",
        ),
    )
}


def get_precision(name: str, key: str = "precisions") -> Precision:
    """Look a precision up by name; an unknown name is a ConfigError listing the known ones."""
    try:
        return PRECISIONS[name]
    except KeyError:
        allowed = ", ".join(PRECISIONS)
        raise ConfigError(key, f"unknown precision '{name}'; allowed: {allowed}") from None


def check_device(precision: Precision, device: str, key: str = "precisions") -> None:
    """Reject a precision that cannot run on ``device`` ("auto" is checked when the job starts)."""
    if device != "auto" and device not in precision.devices:
        allowed = " or ".join(precision.devices)
        raise ConfigError(
            key,
            f"precision '{precision.name}' needs {allowed}; this study runs on '{device}' "
            f"(set device, or drop '{precision.name}')",
        )


def torch_dtype(precision: Precision) -> torch.dtype:
    """The torch dtype weights are loaded in."""
    import torch

    return getattr(torch, precision.dtype)


def apply_transform(precision: Precision, model: torch.nn.Module) -> torch.nn.Module:
    """Apply the variant's post-load transform (if any) and return the model to run."""
    if precision.kind == "cast":
        return model
    if precision.kind == "torch-dynamic-int8":
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
            return torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
    raise ValueError(f"unhandled precision kind {precision.kind!r}")  # registry and code disagree


def weight_bytes(model_dir: Path, precision: Precision) -> dict[str, int]:
    """Parameter count and bytes of the weights in this variant, without loading any weights.

    The model is instantiated on the meta device, so this is cheap even for 70B shapes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(precision))
    n_params = sum(p.numel() for p in model.parameters())
    if precision.kind == "torch-dynamic-int8":
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        n_bytes = linear * 1 + (n_params - linear) * 4
    else:
        n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"parameters": int(n_params), "weight_bytes": int(n_bytes)}


def variant_manifest(model_dir: Path, precision: Precision) -> dict[str, Any]:
    """The content of ``variant.json``: how to load the variant and what it weighs."""
    from joulebench.provenance import package_versions

    return {
        "precision": asdict(precision),
        "model_dir": str(model_dir),
        "checkpoint": None,  # on-load variants reuse the source checkpoint
        "sizes": weight_bytes(model_dir, precision),
        "made_by": package_versions(["torch", "transformers"]),
    }
