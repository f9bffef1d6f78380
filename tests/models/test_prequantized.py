"""Prequantized checkpoints (GPTQ, AWQ, ...): the declared format is checked against config.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_exact_new_tokens, capture_generate
from joulebench.core.errors import ConfigError
from joulebench.models import precisions, shapes, sources, variants
from joulebench.study import config

#: What a GPTQ checkpoint's config.json says (as written by gptqmodel / AutoGPTQ).
GPTQ = {
    "quant_method": "gptq",
    "bits": 4,
    "group_size": 128,
    "desc_act": False,
    "sym": True,
    "checkpoint_format": "gptq",
}


@pytest.fixture
def gptq_dir(tiny_model: Path, tmp_path: Path) -> Path:
    """A local model directory whose config.json declares GPTQ (weights are not loaded)."""
    out = tmp_path / "tiny-gptq"
    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "quantization_config": GPTQ}))
    return out


def study(model_dir: Path, quantization: str | None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "q", "source": "local", "path": str(model_dir)}
    if quantization is not None:
        model["quantization"] = quantization
    return {
        "study": "pq",
        "device": "cpu",
        "engines": ["vllm"],
        "models": [model],
        "precisions": ["prequantized"] if quantization else ["bf16"],
        "batch_sizes": [1],
        "input_lengths": [8],
        "output_lengths": [4],
    }


def test_declared_format_must_match_the_checkpoint(gptq_dir: Path, tiny_model: Path) -> None:
    shapes.check_declared_quantization(gptq_dir, "gptq", "models[0].quantization")
    with pytest.raises(ConfigError) as err:
        shapes.check_declared_quantization(gptq_dir, "awq", "models[0].quantization")
    message = str(err.value)
    assert "models[0].quantization" in message
    assert "declares 'awq'" in message and "quant_method 'gptq'" in message
    with pytest.raises(ConfigError, match="has no quantization_config"):
        shapes.check_declared_quantization(tiny_model, "gptq", "models[0].quantization")
    with pytest.raises(ConfigError, match=r"is not set, but .* is a gptq checkpoint"):
        shapes.check_declared_quantization(gptq_dir, None, "models[0].quantization")


def test_config_validation_checks_a_local_checkpoint(gptq_dir: Path) -> None:
    assert config.validate(study(gptq_dir, "gptq"))["models"][0]["quantization"] == "gptq"
    with pytest.raises(ConfigError, match=r"'models\[0\]\.quantization': declares 'awq'"):
        config.validate(study(gptq_dir, "awq"))
    with pytest.raises(ConfigError, match=r"'models\[0\]\.quantization': is not set"):
        config.validate(study(gptq_dir, None))


def test_prepare_rejects_a_mismatch_and_leaves_nothing(gptq_dir: Path, tmp_path: Path) -> None:
    spec = {"name": "q", "source": "local", "path": str(gptq_dir), "quantization": "awq"}
    out = tmp_path / "results" / "models" / "q"
    with pytest.raises(ConfigError, match=r"models\[3\]\.quantization.*'gptq'"):
        sources.prepare(spec, out, key="models[3]")
    assert not out.exists() and not out.is_symlink()
    assert sources.prepare({**spec, "quantization": "gptq"}, out).is_symlink()


def test_manifest_records_the_shipped_quantization(gptq_dir: Path) -> None:
    manifest = variants.variant_manifest(gptq_dir, precisions.get_precision("prequantized"))
    q = manifest["quantization"]
    assert (q["method"], q["bits"], q["group_size"]) == ("gptq", 4, 128)
    assert q["config"] == GPTQ
    assert manifest["load"]["dtype"] == "auto"
    assert manifest["checkpoint"] is None  # loaded as shipped


def test_shipped_quantization_of_other_formats(tmp_path: Path) -> None:
    def shipped(quantization_config: dict[str, Any]) -> dict[str, Any] | None:
        (tmp_path / "config.json").write_text(
            json.dumps({"quantization_config": quantization_config})
        )
        return variants.shipped_quantization(tmp_path)

    awq = shipped({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm"})
    assert awq is not None and (awq["bits"], awq["group_size"]) == (4, 64)
    fp8 = shipped({"quant_method": "fp8", "weight_block_size": [128, 128]})
    assert fp8 is not None and (fp8["bits"], fp8["group_size"]) == (8, [128, 128])
    ct = shipped(
        {
            "quant_method": "compressed-tensors",
            "config_groups": {"g": {"weights": {"num_bits": 4, "group_size": 32}}},
        }
    )
    assert ct is not None and (ct["bits"], ct["group_size"]) == (4, 32)
    (tmp_path / "config.json").write_text("{}")
    assert variants.shipped_quantization(tmp_path) is None


def test_transformers_runs_a_prequantized_compressed_tensors_checkpoint(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed-tensors checkpoint from elsewhere (here: one joulebench wrote) as shipped."""
    from joulebench.harness.engines import make_engine
    from joulebench.models.quantize import write_checkpoint

    shipped = write_checkpoint(
        tiny_model, precisions.get_precision("ct-w8a8"), {"ignore": ["lm_head"]}, tmp_path / "m"
    ).path
    config.validate({**study(shipped, "compressed-tensors"), "engines": ["transformers"]})
    manifest = variants.variant_manifest(shipped, precisions.get_precision("prequantized"))
    assert manifest["quantization"]["method"] == "compressed-tensors"
    assert manifest["quantization"]["bits"] == 8
    engine = make_engine("transformers", str(shipped), "prequantized", "cpu", variant=manifest)
    engine.load()
    outputs = capture_generate(engine, monkeypatch)
    inputs = engine.make_inputs(2, 8, seed=0)
    assert engine.generate(inputs, new_tokens=4) == [4, 4]
    assert_exact_new_tokens(outputs[-1], inputs["input_ids"], 4, engine.tokenizer)
    assert engine.describe()["quantized_execution"]["activation_quantize_dequantize"] == [
        "int8 per token"
    ]
