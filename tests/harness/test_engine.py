"""The transformers engine on a tiny local model: exact lengths, reproducible prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_exact_new_tokens, capture_generate
from joulebench.core.errors import ConfigError
from joulebench.harness.engines import GenerationError, make_engine


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


def test_generate_makes_exactly_the_tokens_asked(engine, monkeypatch) -> None:
    outputs = capture_generate(engine, monkeypatch)
    inputs = engine.make_inputs(2, 8, seed=0)
    for asked in (1, 12):
        assert engine.generate(inputs, asked) == [asked, asked]
        assert_exact_new_tokens(outputs[-1], inputs["input_ids"], asked, engine.tokenizer)


class EarlyStop:
    """A model whose second row ends at an EOS after 2 of 4 tokens, padded to the batch's width
    (what ``generate`` returns when one sequence of a batch finishes early)."""

    def __init__(self, eos: int, pad: int) -> None:
        self.eos, self.pad = eos, pad

    def generate(self, input_ids, **kwargs):
        import torch

        new = torch.tensor([[5, 6, 7, 8], [5, self.eos, self.pad, self.pad]])
        return torch.cat([input_ids, new], dim=1)


@pytest.mark.parametrize("pad_is_eos", [True, False])
def test_a_row_that_stops_early_is_an_error(engine, monkeypatch, pad_is_eos: bool) -> None:
    eos = engine.tokenizer.eos_token_id
    monkeypatch.setattr(engine, "model", EarlyStop(eos, eos if pad_is_eos else eos + 1))
    with pytest.raises(GenerationError, match=r"asked for 4 new tokens per prompt, got \[4, 2\]"):
        engine.generate({"input_ids": torch_ids([[1, 2], [3, 4]])}, 4)


def torch_ids(rows: list[list[int]]):
    import torch

    return torch.tensor(rows)


def test_a_generation_error_reaches_the_user_as_one_line(
    tiny_model: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    from conftest import bench_fp32_cpu
    from joulebench.cli import main
    from joulebench.harness.engines.hf_transformers import TransformersEngine

    def short(self, inputs, new_tokens, on_first_token=None):
        raise GenerationError(f"asked for {new_tokens} new tokens per prompt, got [1]")

    monkeypatch.setattr(TransformersEngine, "generate", short)
    out = tmp_path / "r.json"
    argv = [*bench_fp32_cpu(tiny_model), "--out", str(out), "--idle-s", "0", "--sample-hz", "0"]
    assert main([*argv, "--input-len", "4", "--output-len", "2", "-q"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["asked for 2 new tokens per prompt, got [1]"]
    assert list(tmp_path.iterdir()) == []


class SlowPrefill:
    """Wraps the model's forward: a prefill (more than one position) takes ``prefill_s`` longer,
    and every call's start and end are logged on perf_counter."""

    def __init__(self, forward, prefill_s: float) -> None:
        self.forward, self.prefill_s = forward, prefill_s
        self.calls: list[tuple[str, float, float]] = []

    def __call__(self, *args, **kwargs):
        import time

        start = time.perf_counter()
        kind = "prefill" if kwargs["input_ids"].shape[1] > 1 else "decode"
        out = self.forward(*args, **kwargs)
        if kind == "prefill":
            time.sleep(self.prefill_s)
        self.calls.append((kind, start, time.perf_counter()))
        return out


def test_first_token_is_marked_after_prefill_and_before_decode(engine, monkeypatch) -> None:
    import time

    slow = SlowPrefill(engine.model.forward, prefill_s=0.3)
    monkeypatch.setattr(engine.model, "forward", slow)
    inputs = engine.make_inputs(4, 8, seed=0)
    marks: list[float] = []
    engine.generate(inputs, 6, on_first_token=lambda: marks.append(time.perf_counter()))
    assert len(marks) == 1
    kinds = [kind for kind, _, _ in slow.calls]
    assert kinds == ["prefill"] + ["decode"] * 5
    prefill_end = slow.calls[0][2]
    first_decode_start = slow.calls[1][1]
    assert prefill_end - slow.calls[0][1] >= 0.3  # the slowed prefill: a mark when it was
    assert prefill_end <= marks[0] <= first_decode_start  # queued would fall 0.3 s early
    engine.generate(inputs, 1, on_first_token=lambda: marks.append(time.perf_counter()))
    assert len(marks) == 2 and marks[1] >= slow.calls[-1][2]  # a 1-token run: after its prefill


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
