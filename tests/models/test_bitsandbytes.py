"""bnb-* variants without a GPU: the settings reach BitsAndBytesConfig and the manifest.

bitsandbytes quantizes on CUDA only, so from_pretrained is replaced by a stand-in that records
its keyword arguments and returns the tiny model; tests/perf/gpu_smoke.py runs them for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from joulebench.harness.engines import make_engine
from joulebench.models import precisions, variants
from joulebench.study.config import validate

#: A quantization: section that differs from every default.
SETTINGS = {"bnb_compute_dtype": "bfloat16", "bnb_double_quant": True, "bnb_int8_threshold": 4.5}


@pytest.fixture
def captured(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Pretend a GPU is there; record what from_pretrained is asked for."""
    import torch
    from transformers import AutoModelForCausalLM

    calls: dict[str, Any] = {}
    real = AutoModelForCausalLM.from_pretrained

    def fake_from_pretrained(path: str, **kwargs: Any) -> Any:
        calls.update(kwargs, path=path)
        return real(path)  # unquantized, on the CPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    return calls


def load_bnb(tiny_model: Path, name: str, quantization: dict[str, Any]) -> None:
    load = variants.load_settings(precisions.get_precision(name), quantization)
    manifest = {"checkpoint": None, "load": load}
    make_engine("transformers", str(tiny_model), name, "cuda", variant=manifest).load()


@pytest.mark.parametrize(("name", "quant_type"), [("bnb-nf4", "nf4"), ("bnb-fp4", "fp4")])
def test_4bit_config_carries_the_settings(
    name: str, quant_type: str, tiny_model: Path, captured: dict[str, Any]
) -> None:
    import torch

    load_bnb(tiny_model, name, SETTINGS)
    config = captured["quantization_config"]
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == quant_type
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert config.bnb_4bit_use_double_quant is True
    assert captured["dtype"] == torch.bfloat16
    assert captured["device_map"] == {"": "cuda"}
    assert captured["path"] == str(tiny_model)


def test_int8_config_carries_the_threshold(tiny_model: Path, captured: dict[str, Any]) -> None:
    import torch

    load_bnb(tiny_model, "bnb-int8", SETTINGS)
    config = captured["quantization_config"]
    assert config.load_in_8bit and not config.load_in_4bit
    assert config.llm_int8_threshold == 4.5
    assert captured["dtype"] == torch.bfloat16  # the unquantized modules' dtype


def test_defaults_are_the_seed_studys(tiny_model: Path, captured: dict[str, Any]) -> None:
    """No quantization: settings → bitsandbytes' defaults, as the paper's code ran: fp32 compute."""
    import torch

    defaults = validate(
        {
            "study": "s",
            "device": "auto",
            "models": [{"name": "m", "source": "synthetic", "architecture": "tiny-llama"}],
            "precisions": ["bf16"],
            "batch_sizes": [1],
            "input_lengths": [8],
            "output_lengths": [4],
        }
    )["quantization"]
    load_bnb(tiny_model, "bnb-fp4", defaults)
    config = captured["quantization_config"]
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert config.bnb_4bit_use_double_quant is False
    load_bnb(tiny_model, "bnb-int8", defaults)
    assert captured["quantization_config"].llm_int8_threshold == 6.0


@pytest.mark.parametrize("name", ["bnb-int8", "bnb-nf4", "bnb-fp4"])
def test_manifest_records_the_compute_dtype(name: str, tiny_model: Path) -> None:
    manifest = variants.variant_manifest(tiny_model, precisions.get_precision(name), SETTINGS)
    q = manifest["quantization"]
    assert q["method"] == "bitsandbytes"
    assert q["scheme"] == name.removeprefix("bnb-")
    assert q["compute_dtype"] == "bfloat16"
    assert manifest["load"]["dtype"] == "bfloat16"
    assert "bitsandbytes" in manifest["made_by"]  # its version (None where not installed)
    assert manifest["checkpoint"] is None  # quantized while loading the source checkpoint


def test_repeated_int8_cast_warning_is_logged_once(
    tiny_model: Path, captured: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """bitsandbytes logs the fp32→fp16 cast on every int8 matmul; a run keeps the first line."""
    import logging

    from joulebench.harness.engines.hf_transformers import BNB_CHATTY_LOGGER

    load_bnb(tiny_model, "bnb-int8", {})
    load_bnb(tiny_model, "bnb-int8", {})  # a second load adds no second filter
    chatty = logging.getLogger(BNB_CHATTY_LOGGER)
    assert len(chatty.filters) == 1
    with caplog.at_level(logging.WARNING, logger=BNB_CHATTY_LOGGER):
        for _ in range(50):
            chatty.warning("MatMul8bitLt: inputs will be cast from %s to float16", "torch.float32")
        chatty.warning("MatMul8bitLt: inputs will be cast from %s to float16", "torch.bfloat16")
    assert [r.getMessage() for r in caplog.records] == [
        "MatMul8bitLt: inputs will be cast from torch.float32 to float16",
        "MatMul8bitLt: inputs will be cast from torch.bfloat16 to float16",
    ]
