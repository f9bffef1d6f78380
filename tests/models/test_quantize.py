"""The ct-* variants: compressed-tensors checkpoints the workflow writes, and how they load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_OVERRIDES, assert_exact_new_tokens, capture_generate
from joulebench.cli import main
from joulebench.core.errors import ConfigError
from joulebench.harness.engines import make_engine
from joulebench.models import precisions, quantize, variants

CT_VARIANTS = ("ct-w4a16", "ct-w8a16", "ct-w8a8", "ct-fp8")

#: Every Linear's input features (128 hidden, 384 intermediate) divide by 128: whole groups,
#: and the shapes vLLM's CPU kernels take.
QUANT_OVERRIDES = {**TINY_OVERRIDES, "intermediate_size": 384}

#: The config's quantization: defaults (group size 128, lm_head left in 16 bit).
DEFAULTS = {"group_size": 128, "ignore": ["lm_head"]}

#: What each variant's config.json and safetensors must say.
EXPECTED: dict[str, dict[str, Any]] = {
    "ct-w4a16": {
        "format": "pack-quantized",
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128},
        "activations": None,
        "stored": ("weight_packed", "I32"),
    },
    "ct-w8a16": {
        "format": "pack-quantized",
        "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "group_size": None},
        "activations": None,
        "stored": ("weight_packed", "I32"),
    },
    "ct-w8a8": {
        "format": "int-quantized",
        "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "group_size": None},
        "activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
        "stored": ("weight", "I8"),
    },
    "ct-fp8": {
        "format": "float-quantized",
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "group_size": None},
        "activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
        "stored": ("weight", "F8_E4M3"),
    },
}


@pytest.fixture(scope="module")
def quant_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from joulebench.models.synthetic import synthesize

    out = tmp_path_factory.mktemp("models") / "tiny-q"
    return synthesize(out, "tiny-llama", QUANT_OVERRIDES, seed=0, tokenizer_vocab_size=512)


@pytest.fixture(scope="module")
def checkpoints(
    quant_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, quantize.QuantizedCheckpoint]:
    out = tmp_path_factory.mktemp("variants")
    return {
        name: quantize.write_checkpoint(
            quant_model, precisions.get_precision(name), DEFAULTS, out / f"{name}.ckpt"
        )
        for name in CT_VARIANTS
    }


def _tensors(checkpoint: Path) -> dict[str, tuple[str, list[int]]]:
    from safetensors import safe_open

    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        return {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("name", CT_VARIANTS)
def test_config_declares_the_scheme(
    name: str, checkpoints: dict[str, quantize.QuantizedCheckpoint]
) -> None:
    config = json.loads((checkpoints[name].path / "config.json").read_text())
    q = config["quantization_config"]
    expected = EXPECTED[name]
    assert q["quant_method"] == "compressed-tensors"
    assert q["format"] == expected["format"]
    assert q["quantization_status"] == "compressed"
    assert q["ignore"] == ["lm_head"]
    assert q["version"] == "0.17.0"
    (group,) = q["config_groups"].values()
    assert group["targets"] == ["Linear"]
    weights = group["weights"]
    assert weights["symmetric"] is True and weights["dynamic"] is False
    assert {k: weights[k] for k in expected["weights"]} == expected["weights"]
    activations = group["input_activations"]
    if expected["activations"] is None:
        assert activations is None
    else:
        assert {k: activations[k] for k in expected["activations"]} == expected["activations"]
    assert config["dtype"] == "bfloat16"
    recipe = checkpoints[name].recipe
    assert (recipe["format"], recipe["weight_bits"]) == (expected["format"], weights["num_bits"])
    assert recipe["quantized_layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer


@pytest.mark.parametrize("name", CT_VARIANTS)
def test_safetensors_hold_quantized_weights_and_scales(
    name: str, checkpoints: dict[str, quantize.QuantizedCheckpoint]
) -> None:
    tensors = _tensors(checkpoints[name].path)
    stored, dtype = EXPECTED[name]["stored"]
    bits = EXPECTED[name]["weights"]["num_bits"]
    for layer in range(2):
        for proj, in_features in (("self_attn.q_proj", 128), ("mlp.down_proj", 384)):
            prefix = f"model.layers.{layer}.{proj}"
            assert tensors[f"{prefix}.{stored}"][0] == dtype
            packed = in_features * bits // 32 if dtype == "I32" else in_features
            assert tensors[f"{prefix}.{stored}"][1][1] == packed
            groups = in_features // 128 if name == "ct-w4a16" else 1
            assert tensors[f"{prefix}.weight_scale"] == ("BF16", [128, groups])
            assert f"{prefix}.weight_zero_point" not in tensors  # symmetric
    assert tensors["lm_head.weight"][0] == "BF16"  # ignored: left unquantized
    assert not any(k.startswith("lm_head.weight_") for k in tensors)


@pytest.mark.parametrize("name", ["ct-w4a16", "ct-w8a8"])
def test_weights_round_to_nearest(
    name: str, quant_model: Path, checkpoints: dict[str, quantize.QuantizedCheckpoint]
) -> None:
    """Dequantized weights are the nearest grid point to the bf16 weights (up to bf16 rounding)."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    source = load_file(quant_model / "model.safetensors")
    written = load_file(checkpoints[name].path / "model.safetensors")
    prefix = "model.layers.1.mlp.down_proj"
    original = source[f"{prefix}.weight"].to(torch.bfloat16).float()
    scale = written[f"{prefix}.weight_scale"].float()
    if name == "ct-w4a16":
        q = unpack_from_int32(written[f"{prefix}.weight_packed"], 4, original.shape)
        assert int(q.min()) >= -8 and int(q.max()) <= 7
        step = scale.repeat_interleave(128, dim=1)
    else:
        q = written[f"{prefix}.weight"]
        assert int(q.abs().max()) <= 128
        step = scale.expand_as(original)
    error = (q.float() * step - original).abs()
    # half a step, plus bf16's rounding of weight/scale (unit roundoff 2^-8), the dtype
    # compressed-tensors quantizes a bf16 model in (as llm-compressor does)
    bound = step * (0.5 + (original / step).abs() * 2**-8) + 1e-7
    assert bool((error <= bound).all())
    assert float((error <= step * 0.5 + 1e-7).float().mean()) > 0.9
    assert int(q.abs().max()) >= (7 if name == "ct-w4a16" else 127)  # the range is used


def test_checkpoints_are_smaller_than_bf16(
    quant_model: Path, checkpoints: dict[str, quantize.QuantizedCheckpoint]
) -> None:
    bf16 = variants.weight_bytes(quant_model, precisions.get_precision("bf16"))["weight_bytes"]
    size = {n: variants.checkpoint_bytes(c.path) for n, c in checkpoints.items()}
    assert all(s < bf16 for s in size.values()), (size, bf16)
    assert size["ct-w4a16"] < size["ct-w8a16"]


def test_tokenizer_and_recipe_travel_with_the_checkpoint(
    checkpoints: dict[str, quantize.QuantizedCheckpoint],
) -> None:
    from transformers import AutoTokenizer

    path = checkpoints["ct-w4a16"].path
    assert AutoTokenizer.from_pretrained(path).decode([5, 6]) != ""
    recipe = json.loads((path / quantize.RECIPE_FILE).read_text())
    assert recipe["precision"] == "ct-w4a16"
    assert recipe["made_by"]["compressed-tensors"] == "0.17.0"


@pytest.mark.parametrize("name", ["ct-w4a16", "ct-w8a16", "ct-w8a8"])
def test_transformers_generates_exact_token_counts(
    name: str,
    quant_model: Path,
    checkpoints: dict[str, quantize.QuantizedCheckpoint],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variant = {"checkpoint": str(checkpoints[name].path), "load": {"dtype": "bfloat16"}}
    engine = make_engine("transformers", str(quant_model), name, "cpu", variant=variant)
    engine.load()
    outputs = capture_generate(engine, monkeypatch)
    inputs = engine.make_inputs(batch_size=2, input_len=8, seed=0)
    assert engine.generate(inputs, new_tokens=5) == [5, 5]
    assert_exact_new_tokens(outputs[-1], inputs["input_ids"], 5, engine.tokenizer)
    execution = engine.describe()["quantized_execution"]
    assert execution["quantized_modules"] == 14
    assert execution["status"] == ["decompressed"]  # at load, not in a measured forward
    assert execution["weight_dtypes"] == ["bfloat16"]
    qdq = ["int8 per token"] if name == "ct-w8a8" else []
    assert execution["activation_quantize_dequantize"] == qdq


def test_write_is_atomic(quant_model: Path, tmp_path: Path, monkeypatch) -> None:
    from compressed_tensors.compressors import ModelCompressor

    def fail(self: object, save_directory: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ModelCompressor, "update_config", fail)
    out = tmp_path / "ct-w8a8.ckpt"
    with pytest.raises(OSError, match="disk full"):
        quantize.write_checkpoint(quant_model, precisions.get_precision("ct-w8a8"), DEFAULTS, out)
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor a partial one


def test_a_cache_entry_another_process_finished_first_is_kept(
    quant_model: Path, tmp_path: Path
) -> None:
    """Two studies quantizing the same checkpoint into one cache: the second discards its own."""
    w8a8 = precisions.get_precision("ct-w8a8")
    entry = tmp_path / "cache" / "ct-w8a8" / "key"
    quantize.write_checkpoint(quant_model, w8a8, DEFAULTS, entry, replace=False)
    first = {p.name: p.stat().st_ino for p in entry.iterdir()}
    quantize.write_checkpoint(quant_model, w8a8, DEFAULTS, entry, replace=False)
    assert {p.name: p.stat().st_ino for p in entry.iterdir()} == first
    assert [p.name for p in entry.parent.iterdir()] == ["key"]  # no partial directory left
    quantize.write_checkpoint(quant_model, w8a8, DEFAULTS, entry)  # replace: a new one
    assert {p.name: p.stat().st_ino for p in entry.iterdir()} != first


def test_a_cache_entry_without_a_recipe_is_not_taken_for_a_finished_one(
    quant_model: Path, tmp_path: Path
) -> None:
    """A non-empty entry with no recipe (not a checkpoint someone finished): the write fails."""
    entry = tmp_path / "cache" / "ct-w8a8" / "key"
    entry.mkdir(parents=True)
    (entry / "stray.txt").write_text("not a checkpoint")
    with pytest.raises(OSError):
        quantize.write_checkpoint(
            quant_model, precisions.get_precision("ct-w8a8"), DEFAULTS, entry, replace=False
        )
    assert [p.name for p in entry.iterdir()] == ["stray.txt"]  # left as it was
    assert [p.name for p in entry.parent.iterdir()] == ["key"]  # no partial directory left


def test_group_size_and_ignore(quant_model: Path, tmp_path: Path) -> None:
    w4 = precisions.get_precision("ct-w4a16")
    with pytest.raises(ConfigError, match=r"quantization\.group_size.*96 does not divide the 128"):
        quantize.write_checkpoint(quant_model, w4, {"group_size": 96}, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    settings = {"group_size": -1, "ignore": ["lm_head", "re:.*down_proj"]}
    written = quantize.write_checkpoint(quant_model, w4, settings, tmp_path / "b")
    assert (written.recipe["weight_strategy"], written.recipe["group_size"]) == ("channel", None)
    tensors = _tensors(written.path)
    assert tensors["model.layers.0.mlp.down_proj.weight"][0] == "BF16"
    assert tensors["model.layers.0.mlp.up_proj.weight_scale"][1] == [384, 1]
    with pytest.raises(ConfigError, match=r"quantization\.ignore"):
        quantize.write_checkpoint(quant_model, w4, {"ignore": ["re:.*"]}, tmp_path / "c")


def test_cli_quantize_writes_checkpoint_and_manifest(quant_model: Path, tmp_path: Path) -> None:
    ckpt, manifest_path = tmp_path / "ct-w4a16.ckpt", tmp_path / "ct-w4a16.json"
    argv = ["quantize", "--model-dir", str(quant_model), "--precision", "ct-w4a16"]
    argv += ["--quantization-json", json.dumps({"group_size": 64})]
    assert main([*argv, "--out-dir", str(ckpt), "--manifest", str(manifest_path)]) == 0
    manifest = json.loads(manifest_path.read_text())
    assert manifest["checkpoint"] == str(ckpt)
    assert manifest["quantization"]["group_size"] == 64
    assert manifest["quantization"]["ignore"] == ["lm_head"]  # the schema's default
    assert manifest["made_by"]["compressed-tensors"] == "0.17.0"
    on_disk = (ckpt / "model.safetensors").stat().st_size
    assert manifest["sizes"]["checkpoint_bytes"] == on_disk


def test_cli_variant_refuses_ct_and_points_to_quantize(
    quant_model: Path, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "v.json"
    argv = ["variant", "--model-dir", str(quant_model), "--precision", "ct-w8a8"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "joulebench quantize" in caplog.text
    assert not out.exists()
    with pytest.raises(ConfigError, match="joulebench quantize"):
        variants.variant_manifest(quant_model, precisions.get_precision("ct-w8a8"))
