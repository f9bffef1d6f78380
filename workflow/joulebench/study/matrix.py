"""The experiment matrix: which (model, precision, engine, tensor parallel) combinations a config
runs, which it cannot (and why), and the benchmark jobs it expands to."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.core.hostcpu import resolve_isa
from joulebench.models.precisions import check_support, get_precision
from joulebench.study.specs import BenchSpec

#: Matrix lists a `models:` entry may narrow for itself (e.g. a large model in bf16 only).
NARROWABLE = ("precisions", "batch_sizes")


def model_precisions(config: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """The precisions a model runs: its own list if it narrows the study's, `prequantized`
    alone for a quantized checkpoint."""
    if model.get("quantization"):
        return ["prequantized"]
    return [p for p in model.get("precisions", config["precisions"]) if p != "prequantized"]


def model_batch_sizes(config: dict[str, Any], model: dict[str, Any]) -> list[int]:
    """The batch sizes a model runs: its own list if it narrows the study's."""
    return list(model.get("batch_sizes", config["batch_sizes"]))


Combination = tuple[dict[str, Any], str, str, int]


def _combinations(
    config: dict[str, Any],
) -> list[tuple[Combination, tuple[str, str] | None]]:
    """Every (model, precision, engine, tp) with None or the (key, reason) it cannot run."""
    out: list[tuple[Combination, tuple[str, str] | None]] = []
    gpu_cc = (config.get("gpu") or {}).get("compute_capability")
    cpu_isa = resolve_isa((config.get("cpu") or {}).get("isa"))
    for model in config["models"]:
        for precision in model_precisions(config, model):
            for engine in config["engines"]:
                for tp in config["tensor_parallel_sizes"]:
                    combo = (model, precision, engine, tp)
                    key = f"precisions[{config['precisions'].index(precision)}]"
                    try:
                        check_support(
                            get_precision(precision),
                            engine,
                            config["device"],
                            key,
                            gpu_cc,
                            model.get("quantization"),
                            cpu_isa,
                        )
                        check_tensor_parallel(engine, config["device"], tp)
                    except ConfigError as err:
                        where = f"{model['name']}/{precision}/{engine}" + (
                            f"/tp{tp}" if tp > 1 else ""
                        )
                        reason = str(err).split(": ", 1)[1]
                        out.append((combo, (err.key, f"{where}: {reason}")))
                        continue
                    out.append((combo, None))
    return out


def unsupported(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, reason) of every combination in the matrix that cannot run."""
    return [reason for _, reason in _combinations(config) if reason is not None]


def check_tensor_parallel(engine: str, device: str, tp: int) -> None:
    """Tensor parallel beyond one GPU runs on the vllm engine on CUDA only."""
    if tp > 1 and (engine != "vllm" or device == "cpu"):
        raise ConfigError(
            "tensor_parallel_sizes",
            f"tensor parallel size {tp} needs the vllm engine on cuda "
            f"(this combination: engine {engine}, device {device})",
        )


def expand(config: dict[str, Any]) -> list[BenchSpec]:
    """The experiment matrix: models × precisions × engines × tensor parallel × batch × input ×
    output lengths, less the combinations that cannot run (an error unless skip_unsupported)."""
    runnable = [combo for combo, reason in _combinations(config) if reason is None]
    specs = [
        BenchSpec(
            study=config["study"],
            model=model["name"],
            engine=engine,
            precision=precision,
            device=config["device"],
            batch_size=batch,
            input_len=inp,
            output_len=out,
            measurement=copy.deepcopy(config["measurement"]),
            tensor_parallel=tp,
            engine_options=copy.deepcopy(config["vllm"]) if engine == "vllm" else {},
        )
        for (model, precision, engine, tp) in runnable
        for batch, inp, out in itertools.product(
            model_batch_sizes(config, model),
            config["input_lengths"],
            config["output_lengths"],
        )
    ]
    if not specs:
        raise ConfigError("<top>", "the experiment matrix is empty")
    return specs
