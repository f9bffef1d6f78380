"""The vLLM engine without vLLM: its arguments, environment and the clear errors it gives."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from joulebench.core.errors import ConfigError, JoulebenchError
from joulebench.harness.engines import EngineOptions, GenerationError, make_engine


def vllm_engine(model: Path, precision: str = "bf16", threads: int = 0, **vllm):
    options = EngineOptions(batch_size=8, max_model_len=96, seed=3, vllm=vllm)
    return make_engine("vllm", str(model), precision, "cpu", threads, options=options)


def test_llm_arguments_follow_the_configuration(tiny_model: Path) -> None:
    kwargs = vllm_engine(tiny_model, extra_args={"block_size": 16}).llm_kwargs()
    assert kwargs["model"] == kwargs["tokenizer"] == str(tiny_model)
    assert kwargs["max_num_seqs"] == 8 and kwargs["max_model_len"] == 96
    assert kwargs["max_num_batched_tokens"] == 8 * 96  # a whole batch's prefill in one step
    assert kwargs["enable_prefix_caching"] is False and kwargs["seed"] == 3
    assert kwargs["dtype"] == "bfloat16" and kwargs["block_size"] == 16
    assert "gpu_memory_utilization" not in kwargs and "quantization" not in kwargs
    assert (
        vllm_engine(tiny_model, max_num_batched_tokens=64).llm_kwargs()["max_num_batched_tokens"]
        == 64
    )


def test_a_converted_checkpoint_is_loaded_with_the_source_tokenizer(tiny_model: Path) -> None:
    variant = {"checkpoint": "/ckpt/ct-w4a16", "load": {"dtype": "bfloat16"}}
    engine = make_engine(
        "vllm", str(tiny_model), "bf16", "cpu", variant=variant, options=EngineOptions()
    )
    kwargs = engine.llm_kwargs()
    assert kwargs["model"] == "/ckpt/ct-w4a16" and kwargs["tokenizer"] == str(tiny_model)


def test_cpu_environment(tiny_model: Path) -> None:
    env = vllm_engine(tiny_model, threads=2, cpu_kvcache_space_gib=3).environment()
    assert env == {
        "VLLM_CPU_KVCACHE_SPACE": "3",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "2",
    }
    assert "OMP_NUM_THREADS" not in vllm_engine(tiny_model).environment()


def test_unsupported_variant_is_rejected_when_the_engine_is_made(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="cpu-int8 does not run on the vllm engine"):
        vllm_engine(tiny_model, "cpu-int8")


def test_missing_vllm_is_a_clear_error(tiny_model: Path) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    with pytest.raises(JoulebenchError, match="needs the vllm package"):
        vllm_engine(tiny_model).load()


class FakeLLM:
    """vllm.LLM's generate, answering each prompt with the token counts the test gives."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts

    def generate(self, prompts: list, params: object, use_tqdm: bool = False) -> list:
        return [
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(range(n)))])
            for n in self.counts
        ]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Just enough of the vllm package for the engine to build its sampling parameters."""
    module = SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(**kw))
    kinds = SimpleNamespace(RequestOutputKind=SimpleNamespace(DELTA="delta"))
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", kinds)


@pytest.mark.usefixtures("fake_vllm")
def test_a_prompt_answered_short_is_an_error(tiny_model: Path) -> None:
    engine = vllm_engine(tiny_model)
    prompts = [{"prompt_token_ids": [1, 2]}] * 3
    engine.llm = FakeLLM([4, 4, 4])
    assert engine.generate(prompts, 4) == [4, 4, 4]
    engine.llm = FakeLLM([4, 3, 4])
    with pytest.raises(GenerationError, match=r"per prompt, got \[4, 3, 4\]"):
        engine.generate(prompts, 4)
    engine.llm = FakeLLM([4, 4])  # a prompt without an answer
    with pytest.raises(GenerationError, match=r"got \[4, 4\]"):
        engine.generate(prompts, 4)
