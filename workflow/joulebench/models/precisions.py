"""The precision registry: every precision and quantization variant, what it means, where it runs.

A variant is one of:

* an on-load setting: a dtype cast (fp32/fp16/bf16), torch dynamic int8 on CPU, bitsandbytes
  quantization while loading (the seed study's int8/int4), or vLLM's dynamic fp8;
* a checkpoint the workflow writes once (compressed-tensors, the format vLLM loads natively),
  reused by every benchmark of that variant;
* ``prequantized``: the quantization a hub or local checkpoint ships with (GPTQ, AWQ, ...).

Every (engine, device, variant) combination is either listed here as supported or rejected by
:func:`check_support` with the reason, before any job starts. Each variant is described by a
manifest (``variant.json``, :mod:`~joulebench.models.variants`) that the benchmark jobs read, so
a benchmark never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from joulebench.core.errors import ConfigError, UnsupportedError
from joulebench.core.hostcpu import ISA_LEVELS, VLLM_CPU_BUILDS, isa_rank

#: Quantization formats a checkpoint can ship with (``models[].quantization``), as
#: ``quantization_config.quant_method`` spells them in its config.json.
PREQUANTIZED_FORMATS = ("gptq", "awq", "compressed-tensors", "fp8")

BOTH = ("cpu", "cuda")


@dataclass(frozen=True)
class CpuKernel:
    """An operator an engine needs on CPU, and the lowest instruction-set level that has it.

    ``min_isa`` is a level of :data:`joulebench.core.hostcpu.ISA_LEVELS`; the vLLM tier checks it
    against the operators each installed vllm-cpu build really registers.
    """

    engine: str
    op: str
    min_isa: str


CUDA = ("cuda",)


@dataclass(frozen=True)
class Precision:
    """One named precision variant and the engines/devices that can run it."""

    name: str
    kind: str  # cast, torch-dynamic-int8, bitsandbytes, compressed-tensors, vllm-fp8, prequantized
    dtype: str  # dtype of the weights that stay unquantized, and of activations
    weight_bits: int  # bits per quantized weight (0: whatever the checkpoint ships)
    library: str  # the library that implements it
    description: str
    engines: dict[str, tuple[str, ...]]  # engine → devices it runs on
    why_not: dict[str, str] = field(default_factory=dict)  # engine → why it cannot run there
    scheme: str | None = None  # bnb: int8/nf4/fp4; compressed-tensors: W4A16, W8A8, ...
    min_compute_capability: float | None = None  # CUDA compute capability it needs
    cpu_kernels: tuple[CpuKernel, ...] = ()  # operators it needs on CPU, per engine

    @property
    def writes_checkpoint(self) -> bool:
        """True when the workflow writes a converted checkpoint for this variant."""
        return self.kind == "compressed-tensors"


_VLLM_NO_TORCH_INT8 = "torch dynamic quantization is a transformers-on-CPU transform"
_VLLM_NO_BNB = (
    "the seed study's bitsandbytes variants are measured through transformers; for a "
    "quantized vLLM run use a ct-* checkpoint or fp8"
)
_CT_CPU = "vllm-cpu's kernels cover int4 weights (W4A16) and int8 W8A8 only"

PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "cast", "float32", 32, "torch", "IEEE float32.",
                  {"transformers": BOTH, "vllm": BOTH}),
        Precision("fp16", "cast", "float16", 16, "torch", "IEEE float16.",
                  {"transformers": BOTH, "vllm": CUDA},
                  why_not={"vllm/cpu": "vllm-cpu computes fp16 models in bf16; use bf16"}),
        Precision("bf16", "cast", "bfloat16", 16, "torch", "bfloat16.",
                  {"transformers": BOTH, "vllm": BOTH}),
        Precision(
            "cpu-int8", "torch-dynamic-int8", "float32", 8, "torch",
            "torch dynamic quantization: int8 weights of every nn.Linear, activations quantized "
            "per batch at run time, fp32 elsewhere.",
            {"transformers": ("cpu",)}, why_not={"vllm": _VLLM_NO_TORCH_INT8}),
        Precision(
            "bnb-int8", "bitsandbytes", "float32", 8, "bitsandbytes",
            "LLM.int8(): int8 weights, outlier features (above the threshold) in 16 bit; "
            "quantized while loading.",
            {"transformers": CUDA}, why_not={"vllm": _VLLM_NO_BNB}, scheme="int8"),
        Precision(
            "bnb-nf4", "bitsandbytes", "float32", 4, "bitsandbytes",
            "4-bit NormalFloat weights (QLoRA), computed in the configured compute dtype.",
            {"transformers": CUDA}, why_not={"vllm": _VLLM_NO_BNB}, scheme="nf4"),
        Precision(
            "bnb-fp4", "bitsandbytes", "float32", 4, "bitsandbytes",
            "4-bit float weights, computed in the configured compute dtype (bitsandbytes' "
            "4-bit default, as in the seed study's code).",
            {"transformers": CUDA}, why_not={"vllm": _VLLM_NO_BNB}, scheme="fp4"),
        Precision(
            "ct-w4a16", "compressed-tensors", "bfloat16", 4, "compressed-tensors",
            "Checkpoint written by the workflow: symmetric int4 weights per group "
            "(round to nearest), bf16 activations.",
            {"transformers": BOTH, "vllm": BOTH}, scheme="W4A16",
            cpu_kernels=(CpuKernel("vllm", "cpu_gemm_wna16", "avx512"),)),
        Precision(
            "ct-w8a16", "compressed-tensors", "bfloat16", 8, "compressed-tensors",
            "Checkpoint written by the workflow: symmetric int8 weights per channel "
            "(round to nearest), bf16 activations.",
            {"transformers": BOTH, "vllm": CUDA},
            why_not={"vllm/cpu": _CT_CPU}, scheme="W8A16"),
        Precision(
            "ct-w8a8", "compressed-tensors", "bfloat16", 8, "compressed-tensors",
            "Checkpoint written by the workflow: symmetric int8 weights per channel, "
            "activations quantized to int8 per token at run time.",
            {"transformers": BOTH, "vllm": BOTH}, scheme="W8A8",
            cpu_kernels=(CpuKernel("vllm", "onednn_scaled_mm", "avx2"),)),
        Precision(
            "ct-fp8", "compressed-tensors", "bfloat16", 8, "compressed-tensors",
            "Checkpoint written by the workflow: FP8 (e4m3) weights per channel, activations "
            "quantized to FP8 per token at run time (FP8-dynamic).",
            {"vllm": CUDA},
            why_not={"transformers": "transformers would only emulate FP8 (dequantized bf16 "
                                     "matmuls); measure it on vllm",
                     "vllm/cpu": _CT_CPU},
            scheme="FP8_DYNAMIC", min_compute_capability=8.9),
        Precision(
            "fp8", "vllm-fp8", "bfloat16", 8, "vllm",
            "vLLM's dynamic FP8: weights cast to e4m3 per tensor while loading, activations "
            "scaled per batch at run time.",
            {"vllm": CUDA},
            why_not={"transformers": "dynamic FP8 on load is a vLLM feature; use vllm"},
            min_compute_capability=8.9),
        Precision(
            "prequantized", "prequantized", "auto", 0, "(the checkpoint's)",
            "The quantization the checkpoint ships with (GPTQ, AWQ, compressed-tensors, FP8), "
            "declared as models[].quantization and checked against its config.json.",
            {"vllm": BOTH, "transformers": BOTH}),
    )
}  # fmt: skip


def get_precision(name: str, key: str = "precisions") -> Precision:
    """Look a precision up by name; an unknown name is a ConfigError listing the known ones."""
    try:
        return PRECISIONS[name]
    except KeyError:
        allowed = ", ".join(PRECISIONS)
        raise ConfigError(key, f"unknown precision '{name}'; allowed: {allowed}") from None


def _where(precision: Precision) -> str:
    return "; ".join(f"{e} on {' or '.join(d)}" for e, d in precision.engines.items())


def check_support(
    precision: Precision,
    engine: str,
    device: str,
    key: str = "precisions",
    compute_capability: float | None = None,
    checkpoint_format: str | None = None,
    cpu_isa: str | None = None,
) -> None:
    """Reject an (engine, device, variant) combination that cannot run, saying why.

    ``device`` "auto" skips the device check (it is repeated when the job starts), and
    ``compute_capability`` None (GPU not known yet) skips the GPU generation check, as
    ``cpu_isa`` None (CPU not known) skips the CPU instruction-set check.
    ``checkpoint_format`` is the ``models[].quantization`` of a ``prequantized`` model.
    """
    name = precision.name
    devices = precision.engines.get(engine)
    if devices is None:
        reason = precision.why_not.get(engine, "")
        raise UnsupportedError(
            key,
            f"{name} does not run on the {engine} engine"
            + (f" ({reason})" if reason else "")
            + f"; it runs on: {_where(precision)}",
        )
    if device != "auto" and device not in devices:
        reason = precision.why_not.get(f"{engine}/{device}")
        if reason is None and devices == CUDA:
            reason = f"{name} needs a CUDA GPU; this job runs on CPU"
        raise UnsupportedError(
            key,
            (
                reason
                or f"{name} on {engine} needs {' or '.join(devices)}; this job runs on {device}"
            )
            + f" (supported: {_where(precision)})",
        )
    if precision.kind == "prequantized":
        _check_prequantized(engine, device, key, checkpoint_format)
    need = precision.min_compute_capability
    if need is not None and compute_capability is not None and compute_capability < need:
        raise UnsupportedError(
            key,
            f"{name} needs FP8 tensor cores: CUDA compute capability ≥ {need} (Ada, Hopper or "
            f"newer); the configured GPU has {compute_capability}",
        )
    if device == "cpu" and cpu_isa is not None:
        for kernel in cpu_kernels(precision, engine):
            if isa_rank(cpu_isa) < isa_rank(kernel.min_isa):
                raise UnsupportedError(key, cpu_kernel_reason(precision, kernel, cpu_isa))


def cpu_kernels(precision: Precision, engine: str) -> tuple[CpuKernel, ...]:
    """The CPU operators ``engine`` needs to run ``precision``."""
    return tuple(k for k in precision.cpu_kernels if k.engine == engine)


def cpu_kernel_reason(precision: Precision, kernel: CpuKernel, have: str) -> str:
    """Why ``precision`` cannot run on a CPU whose kernel build is ``have``."""
    builds = [VLLM_CPU_BUILDS[level] for level in ISA_LEVELS[isa_rank(kernel.min_isa) :]]
    return (
        f"{precision.name} on {kernel.engine}-cpu needs the {kernel.op} kernel, which only its "
        f"{'/'.join(builds)} builds have ({kernel.min_isa.replace('_', '+').upper()} or newer); "
        f"this CPU loads the {VLLM_CPU_BUILDS[have]} build ({have.replace('_', '+').upper()}; "
        "config key cpu.isa). Run it on transformers or on a CUDA GPU"
    )


def _check_prequantized(engine: str, device: str, key: str, fmt: str | None) -> None:
    if fmt is None:
        raise ConfigError(
            key,
            "prequantized needs a model that declares its checkpoint's format "
            f"(models[].quantization: {', '.join(PREQUANTIZED_FORMATS)})",
        )
    if engine == "transformers" and fmt in ("gptq", "awq"):
        raise UnsupportedError(
            key,
            f"a {fmt} checkpoint on transformers needs gptqmodel/autoawq, which joulebench does "
            "not install; run it on the vllm engine",
        )
    if fmt == "fp8" and device == "cpu":
        raise UnsupportedError(key, "an fp8 checkpoint needs a CUDA GPU; this job runs on CPU")


def check_device(precision: Precision, device: str, key: str = "precisions") -> None:
    """Reject a precision that no engine can run on ``device`` ("auto" is checked later)."""
    if device == "auto":
        return
    if not any(device in devices for devices in precision.engines.values()):
        check_support(precision, next(iter(precision.engines)), device, key)
