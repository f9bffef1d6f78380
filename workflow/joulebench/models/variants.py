"""A precision variant made concrete for one model: how an engine loads it (dtype, quantization
options), its post-load transform, what its weights weigh, and its manifest (``variant.json``).

The names and where each runs are the registry's (:mod:`~joulebench.models.precisions`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.core.errors import ConfigError
from joulebench.models.precisions import Precision
from joulebench.models.shapes import checkpoint_quantization

if TYPE_CHECKING:
    import torch


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` ("float32", "bfloat16", ...)."""
    import torch

    return getattr(torch, name)


def load_settings(precision: Precision, quantization: dict[str, Any] | None = None) -> dict:
    """How an engine loads this variant: dtype and quantization options (written to the manifest).

    ``quantization`` is the config's ``quantization:`` section; its bitsandbytes keys make the
    compute dtype explicit (the seed study ran bitsandbytes' defaults: fp4 with fp32 compute).
    """
    q = quantization or {}
    if precision.kind == "bitsandbytes":
        compute = q.get("bnb_compute_dtype", "float32")
        if precision.scheme == "int8":
            bnb = {"load_in_8bit": True, "llm_int8_threshold": q.get("bnb_int8_threshold", 6.0)}
        else:
            bnb = {
                "load_in_4bit": True,
                "bnb_4bit_quant_type": precision.scheme,
                "bnb_4bit_compute_dtype": compute,
                "bnb_4bit_use_double_quant": q.get("bnb_double_quant", False),
            }
        return {"dtype": compute, "bitsandbytes": bnb}
    if precision.kind == "vllm-fp8":
        return {"dtype": precision.dtype, "vllm_quantization": "fp8"}
    if precision.kind in ("compressed-tensors", "prequantized"):
        return {"dtype": "auto" if precision.kind == "prequantized" else precision.dtype}
    return {"dtype": precision.dtype}


def apply_transform(precision: Precision, model: torch.nn.Module) -> torch.nn.Module:
    """Apply the variant's post-load transform (if any) and return the model to run."""
    if precision.kind != "torch-dynamic-int8":
        return model
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def weight_bytes(model_dir: Path, precision: Precision) -> dict[str, int]:
    """Parameter count and bytes of the weights in this variant, without loading any weights.

    The model is instantiated on the meta device, so this is cheap even for 70B shapes.
    Quantized variants count their quantized Linear weights at ``weight_bits`` (scales and
    zero points excluded: the checkpoint size on disk is recorded beside this figure).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    dtype = precision.dtype if precision.dtype != "auto" else "float16"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if precision.weight_bits and precision.kind != "cast":
        # torch dynamic quantization converts every Linear; the others keep the head in 16 bit
        head = None if precision.kind == "torch-dynamic-int8" else model.get_output_embeddings()
        linear = sum(
            m.weight.numel()
            for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        )
        per_param = torch.empty((), dtype=torch_dtype(dtype), device="meta").element_size()
        n_bytes += linear * precision.weight_bits // 8 - linear * per_param
    return {"parameters": int(n_params), "weight_bytes": int(n_bytes)}


def checkpoint_bytes(directory: Path) -> int:
    """Bytes of the weight files (safetensors/bin) in a checkpoint directory."""
    return sum(
        f.stat().st_size
        for f in Path(directory).iterdir()
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file()
    )


def shipped_quantization(model_dir: Path) -> dict[str, Any] | None:
    """Method, bits and group size of the quantization a checkpoint ships (its config.json).

    Reads the spellings of GPTQ/AWQ (``bits``, ``group_size``), FP8 (8 bits, block size) and
    compressed-tensors (the first config group's weights); ``config`` keeps the whole entry.
    """
    config = checkpoint_quantization(model_dir)
    if config is None:
        return None
    method = config.get("quant_method")
    bits, group_size = config.get("bits"), config.get("group_size")
    if method == "fp8":
        bits, group_size = 8, config.get("weight_block_size")
    elif method == "compressed-tensors":
        groups = list((config.get("config_groups") or {}).values())
        weights = (groups[0].get("weights") or {}) if groups else {}
        bits, group_size = weights.get("num_bits"), weights.get("group_size")
    return {"method": method, "bits": bits, "group_size": group_size, "config": config}


def _quantization_record(
    precision: Precision, model_dir: Path, load: dict[str, Any], recipe: dict[str, Any] | None
) -> dict[str, Any] | None:
    """What the manifest says about the variant's quantization (None for casts)."""
    if precision.kind == "bitsandbytes":
        bnb = load["bitsandbytes"]
        return {
            "method": "bitsandbytes",
            "scheme": precision.scheme,
            "compute_dtype": bnb.get("bnb_4bit_compute_dtype", load["dtype"]),
            "settings": bnb,
        }
    if precision.kind == "prequantized":
        return shipped_quantization(model_dir)
    if precision.kind == "compressed-tensors":
        return recipe
    return None


def variant_manifest(
    model_dir: Path,
    precision: Precision,
    quantization: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    made_by: dict[str, str | None] | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``variant.json``: how to load the variant, what made it, what it weighs.

    ``checkpoint`` is the converted checkpoint a variant's rule wrote (None for on-load
    variants, which reuse the source checkpoint); ``made_by`` the libraries that made it and
    ``recipe`` how (scheme, group size, ignored modules: see :mod:`joulebench.models.quantize`).
    """
    from joulebench.provenance.record import package_versions

    if precision.writes_checkpoint and checkpoint is None:
        raise ConfigError(
            "precisions",
            f"{precision.name} is a checkpoint the workflow writes: make it with "
            "`joulebench quantize`, which writes its variant.json too",
        )
    loaded_from = Path(checkpoint) if checkpoint is not None else Path(model_dir)
    libraries = ["torch", "transformers"]
    if precision.library not in ("torch", "(the checkpoint's)"):
        libraries.append(precision.library)
    load = load_settings(precision, quantization)
    return {
        "precision": asdict(precision),
        "model_dir": str(model_dir),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "load": load,
        "quantization": _quantization_record(precision, Path(model_dir), load, recipe),
        "sizes": {
            **weight_bytes(model_dir, precision),
            "checkpoint_bytes": checkpoint_bytes(loaded_from),
        },
        "made_by": made_by or package_versions(libraries),
    }
