"""The transformers engine on a tiny local model: exact lengths, reproducible prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from joulebench.engines import make_engine
from joulebench.errors import ConfigError


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    e = make_engine("transformers", str(tiny_model), "bf16", "cpu", threads=1)
    e.load()
    return e


def test_inputs_have_exact_length_and_no_special_tokens(engine) -> None:
    inputs = engine.make_inputs(3, 17, seed=1)
    assert tuple(inputs["input_ids"].shape) == (3, 17)
    special = set(engine.tokenizer.all_special_ids)
    assert not special & set(inputs["input_ids"].flatten().tolist())
    again = engine.make_inputs(3, 17, seed=1)
    assert (again["input_ids"] == inputs["input_ids"]).all()


def test_generate_makes_exactly_the_tokens_asked(engine) -> None:
    inputs = engine.make_inputs(2, 8, seed=0)
    engine.generate(inputs, 1)
    engine.generate(inputs, 12)  # raises GenerationError on any other count


def test_first_token_is_marked_once_between_start_and_end(engine) -> None:
    import time

    inputs = engine.make_inputs(4, 8, seed=0)
    marks: list[float] = []
    start = time.perf_counter()
    engine.generate(inputs, 6, on_first_token=lambda: marks.append(time.perf_counter()))
    end = time.perf_counter()
    assert len(marks) == 1 and start < marks[0] < end
    engine.generate(inputs, 1, on_first_token=lambda: marks.append(time.perf_counter()))
    assert len(marks) == 2  # a 1-token generation: its only token is the first


def test_engine_facts(engine) -> None:
    info = engine.describe()
    assert info["dtype"] == "bfloat16" and info["device"] == "cpu"
    assert info["torch_threads"] == 1
    assert engine.peak_memory()["kind"] == "process_peak_rss"


def test_cuda_without_gpu_is_rejected(tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
        make_engine("transformers", str(tiny_model), "bf16", "cuda")


def test_unknown_engine() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'tgi'"):
        make_engine("tgi", "x", "fp32", "cpu")
