"""Model sources and precision variants on a locally made tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from joulebench.core.errors import ConfigError, ModelSourceError
from joulebench.models import hub, precisions, shapes, sources, synthetic, variants


def test_synthetic_model_is_a_normal_hf_directory(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.num_hidden_layers == 2
    assert tok.decode(tok("energy per token")["input_ids"]) == "energy per token"
    source = json.loads((tiny_model / "joulebench_source.json").read_text())
    assert source["architecture"] == "tiny-llama"
    assert not tiny_model.with_name("tiny.partial").exists()


def test_synthesis_is_reproducible(tiny_model: Path, tmp_path: Path) -> None:
    from conftest import TINY_OVERRIDES

    again = synthetic.synthesize(tmp_path / "t", "tiny-llama", TINY_OVERRIDES, 0, 512)
    a = (tiny_model / "model.safetensors").read_bytes()
    assert a == (again / "model.safetensors").read_bytes()


def test_presets_have_real_shapes() -> None:
    llama = shapes.architecture("llama-3.1-8b")
    assert (llama["hidden_size"], llama["num_hidden_layers"], llama["vocab_size"]) == (
        4096,
        32,
        128256,
    )
    assert shapes.architecture("tiny-llama", {"num_hidden_layers": 1})["num_hidden_layers"] == 1
    with pytest.raises(ConfigError, match="unknown architecture 'gpt'"):
        shapes.architecture("gpt")


def test_large_preset_parameter_count_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({k: v for k, v in shapes.architecture("llama-3.1-8b").items() if k != "dtype"})
    )
    sizes = variants.weight_bytes(tmp_path, precisions.get_precision("bf16"))
    assert 8.0e9 < sizes["parameters"] < 8.1e9  # Llama-3.1-8B has 8.03B parameters
    assert sizes["weight_bytes"] == 2 * sizes["parameters"]


def test_variant_sizes(tiny_model: Path) -> None:
    b = {
        p: variants.weight_bytes(tiny_model, precisions.get_precision(p))["weight_bytes"]
        for p in ("fp32", "bf16", "cpu-int8")
    }
    assert b["fp32"] == 2 * b["bf16"]
    assert b["cpu-int8"] < b["bf16"]


def test_cpu_int8_quantizes_linear_layers(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    q = variants.apply_transform(precisions.get_precision("cpu-int8"), model)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k for k in kinds)
    assert not any(type(m) is torch.nn.Linear for m in q.modules())


def test_hub_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as err:
        hub.download(tmp_path / "m", "Qwen/Qwen2.5-0.5B-Instruct", "a" * 40)
    msg = str(err.value)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in msg and "a" * 40 in msg
    assert "source: local" in msg
    assert not (tmp_path / "m").exists()


def test_local_source_links_the_directory(tiny_model: Path, tmp_path: Path) -> None:
    out = sources.prepare({"name": "l", "source": "local", "path": str(tiny_model)}, tmp_path / "l")
    assert out.is_symlink() and (out / "config.json").is_file()
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        shapes.check_local(tmp_path)


def test_parameter_count_matches_the_built_model(tiny_model: Path) -> None:
    from joulebench.models.precisions import get_precision
    from joulebench.models.shapes import PRESETS, architecture, parameter_count
    from joulebench.models.variants import weight_bytes

    built = weight_bytes(tiny_model, get_precision("fp32"))["parameters"]
    assert parameter_count(architecture("tiny-llama", TINY_OVERRIDES)) == built
    # published sizes of the real models whose shapes the presets copy
    assert parameter_count(PRESETS["llama-3.1-8b"]) == 8_030_261_248
    assert parameter_count(PRESETS["qwen2.5-0.5b"]) == 494_032_768
    with pytest.raises(ConfigError, match="allowed: llama, qwen2"):
        parameter_count({**PRESETS["tiny-llama"], "model_type": "gpt2"})
