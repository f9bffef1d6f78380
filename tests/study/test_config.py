"""Config validation and matrix expansion; each bad value names its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from joulebench.core import optional
from joulebench.core.errors import ConfigError
from joulebench.study import config, matrix, specs

BASE: dict[str, Any] = {
    "models": [{"name": "tiny", "source": "synthetic", "architecture": "tiny-llama"}],
    "precisions": ["fp32", "bf16"],
    "batch_sizes": [1, 4],
    "input_lengths": [16],
    "output_lengths": [8, 16],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with ``path`` (dotted, list indices as numbers) set to ``value``; None deletes."""
    cfg = copy.deepcopy(BASE)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = cfg
    for p in parents:
        node = node.setdefault(p, {}) if isinstance(p, str) else node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return cfg


def test_defaults_are_filled() -> None:
    cfg = config.validate(copy.deepcopy(BASE))
    assert cfg["device"] == "cpu"
    assert cfg["engines"] == ["transformers"]
    assert cfg["measurement"]["repetitions"] == 5
    assert cfg["measurement"]["cpu_estimate"] == {"idle_w": 10.0, "tdp_w": 45.0}
    assert cfg["models"][0]["seed"] == 0


def test_expand_is_the_full_product() -> None:
    specs = matrix.expand(config.validate(copy.deepcopy(BASE)))
    assert len(specs) == 1 * 2 * 1 * 2 * 1 * 2
    ids = {s.config_id for s in specs}
    assert "tiny/bf16/transformers/bs4_in16_out8" in ids
    assert len(ids) == len(specs)


def test_a_model_narrows_its_precisions_and_batch_sizes() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["models"].append(
        {"name": "big", "source": "synthetic", "architecture": "tiny-llama", "precisions": ["bf16"]}
    )
    cfg["models"][1]["batch_sizes"] = [4]
    ids = {s.config_id for s in matrix.expand(config.validate(cfg))}
    tiny = {
        f"tiny/{p}/transformers/bs{b}_in16_out{o}"
        for p in ("fp32", "bf16")
        for b in (1, 4)
        for o in (8, 16)
    }
    big = {"big/bf16/transformers/bs4_in16_out8", "big/bf16/transformers/bs4_in16_out16"}
    assert ids == tiny | big


@pytest.mark.parametrize(
    ("key", "value", "bad"),
    [("precisions", ["bf16", "fp16"], "fp16"), ("batch_sizes", [4, 8], "8")],
)
def test_a_model_may_not_widen_the_matrix(key: str, value: list[Any], bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.validate(with_change(f"models.0.{key}", value))
    assert err.value.key == f"models[0].{key}[1]"
    assert f"'{bad}' is not in the study's {key}" in str(err.value)


def test_spec_round_trips_through_dict() -> None:
    spec = matrix.expand(config.validate(copy.deepcopy(BASE)))[0]
    assert specs.BenchSpec.from_dict(spec.to_dict()) == spec


#: (dotted path, bad value, key the message must name, fragment of the message)
BAD_VALUES: list[tuple[str, Any, str, str]] = [
    ("batch_sizez", [1], "batch_sizez", "unknown key"),
    ("batch_sizes", [0], "batch_sizes[0]", "minimum"),
    ("batch_sizes", [], "batch_sizes", "non-empty"),
    ("batch_sizes", ["4"], "batch_sizes[0]", "not of type"),
    ("input_lengths", [-3], "input_lengths[0]", "minimum"),
    ("output_lengths", [1], "output_lengths[0]", "minimum"),
    ("precisions", ["fp9"], "precisions[0]", "allowed: fp32"),
    ("precisions", ["fp8"], "precisions[0]", "fp8 needs a CUDA GPU; this job runs on CPU"),
    ("precisions", ["bnb-nf4"], "precisions[0]", "bnb-nf4 needs a CUDA GPU; this job runs on CPU"),
    ("device", "tpu", "device", "allowed: cpu, cuda, auto"),
    ("engines", ["tgi"], "engines[0]", "allowed: transformers"),
    ("measurement.meter", "codecarbon", "measurement.meter", "allowed: auto"),
    ("measurement.meter", ["nvml", "zeus"], "measurement.meter", "unknown meter 'zeus'"),
    ("measurement.meter", ["auto", "rapl"], "measurement.meter", "cannot be combined"),
    ("measurement.meter", ["rapl", "estimate"], "measurement.meter", "pick one"),
    ("measurement.meter", [], "measurement.meter", "non-empty"),
    ("measurement.meter", 3, "measurement.meter", "not of type"),
    ("measurement.sample_hz", -1, "measurement.sample_hz", "minimum"),
    ("measurement.sample_hz", 5000, "measurement.sample_hz", "maximum"),
    ("measurement.idle_s", -2, "measurement.idle_s", "minimum"),
    ("measurement.idle_s", "long", "measurement.idle_s", "not of type"),
    ("measurement.repetitions", 1, "measurement.repetitions", "minimum"),
    ("measurement.warmup", 2, "measurement.warmup", "unknown key"),
    ("measurement.cpu_estimate.tdp_w", 0, "measurement.cpu_estimate.tdp_w", "invalid"),
    ("models.0.source", "s3", "models[0].source", "allowed: synthetic, hub, local"),
    ("models.0.architecture", "gpt-5", "models[0].architecture", "allowed: tiny-llama"),
    ("models.0.architecture", None, "models[0].architecture", "required"),
    ("models.0.name", "a/b", "models[0].name", "does not match"),
    ("models.0.repo", "x/y", "models[0].repo", "only applies to source 'hub'"),
    ("output_lengths", [4096], "output_lengths[0]", "exceed the context"),
    ("output_lengths", [8, 2040], "output_lengths[1]", "at most 2032 with that input"),
    ("input_lengths", [16, 4096], "input_lengths[1]", "leave no room for output"),
    ("input_lengths", [2048], "input_lengths[0]", "allowed: below 2048"),
    ("analysis.baseline.precision", "fp16", "analysis.baseline.precision", "one of precisions"),
    ("analysis.baseline.precision", "fp9", "analysis.baseline.precision", "unknown precision"),
    ("analysis.baseline.batch_size", 8, "analysis.baseline.batch_size", "batch_sizes (1, 4)"),
    ("measurement.cpu_estimate.idle_w", 46, "measurement.cpu_estimate.idle_w", "above tdp_w"),
    ("analysis.confidence", 1.5, "analysis.confidence", "invalid"),
    ("models", [], "models", "non-empty"),
    ("study", "my study", "study", "does not match"),
    ("measurement.min_window_s", -1, "measurement.min_window_s", "minimum"),
    ("measurement.memory_guard", "yes", "measurement.memory_guard", "not of type"),
    ("precisions", ["bf16", "bf16"], "precisions", "non-unique"),
    ("precisions", ["prequantized"], "precisions[0]", "declares its checkpoint's format"),
    ("models.0.quantization", "gguf", "models[0].quantization", "allowed: gptq"),
    ("tensor_parallel_sizes", [2], "tensor_parallel_sizes", "needs the vllm engine on cuda"),
    ("quantization.bnb_compute_dtype", "int8", "quantization.bnb_compute_dtype", "allowed"),
    ("vllm.gpu_memory_utilization", 1.5, "vllm.gpu_memory_utilization", "maximum"),
    ("gpu.compute_capability", "9.0", "gpu.compute_capability", "not of type"),
]


@pytest.mark.parametrize(("path", "value", "key", "fragment"), BAD_VALUES)
def test_bad_values_name_their_key(path: str, value: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.validate(with_change(path, value))
    assert err.value.key == key
    assert fragment in str(err.value)


def test_unset_baseline_is_a_configuration_the_study_runs() -> None:
    cfg = config.validate(with_change("precisions", ["bf16", "fp16"]) | {"batch_sizes": [4, 2]})
    assert cfg["analysis"]["baseline"] == {"precision": "bf16", "batch_size": 2}
    cfg = config.validate(copy.deepcopy(BASE))
    assert cfg["analysis"]["baseline"] == {"precision": "fp32", "batch_size": 1}


def test_idle_power_may_equal_tdp() -> None:
    cfg = with_change("measurement.cpu_estimate", {"idle_w": 30.0, "tdp_w": 30.0})
    assert config.validate(cfg)["measurement"]["cpu_estimate"]["idle_w"] == 30.0


def test_cpu_only_precision_on_cuda_is_rejected() -> None:
    cfg = with_change("precisions", ["cpu-int8"])
    cfg["device"] = "cuda"
    with pytest.raises(ConfigError, match="cpu-int8 on transformers needs cpu") as err:
        config.validate(cfg)
    assert err.value.key == "precisions[0]"


def test_duplicate_model_names() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["models"].append(dict(cfg["models"][0]))
    with pytest.raises(ConfigError, match="duplicate model name 'tiny'") as err:
        config.validate(cfg)
    assert err.value.key == "models[1].name"


def test_hub_needs_pinned_revision() -> None:
    cfg = with_change("models.0", {"name": "q", "source": "hub", "repo": "Qwen/Qwen2.5-0.5B"})
    with pytest.raises(ConfigError, match="required for source 'hub'") as err:
        config.validate(cfg)
    assert err.value.key == "models[0].revision"
    cfg["models"][0]["revision"] = "main"
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    assert err.value.key == "models[0].revision"


def test_local_path_must_exist(tmp_path: Path) -> None:
    cfg = with_change("models.0", {"name": "l", "source": "local", "path": str(tmp_path / "no")})
    with pytest.raises(ConfigError, match="does not exist") as err:
        config.validate(cfg)
    assert err.value.key == "models[0].path"


def test_local_path_is_resolved_against_base_dir(tiny_model: Path) -> None:
    cfg = with_change("models.0", {"name": "l", "source": "local", "path": tiny_model.name})
    out = config.validate(cfg, base_dir=tiny_model.parent)
    assert out["models"][0]["path"] == str(tiny_model.resolve())


def test_load_reads_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert config.load(path)["study"] == "joulebench"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")


def test_default_study_config_is_valid() -> None:
    from conftest import REPO

    cfg = config.load(REPO / "config" / "config.yaml")
    assert len(matrix.expand(cfg)) == 9


def test_meter_may_be_one_name_or_a_list() -> None:
    cfg = config.validate(copy.deepcopy(BASE))
    assert cfg["measurement"]["meter"] == "auto"
    assert cfg["measurement"]["sample_hz"] == 20
    assert cfg["measurement"]["idle_s"] is None
    cfg = config.validate(with_change("measurement.meter", ["nvml", "rapl"]))
    assert cfg["measurement"]["meter"] == ["nvml", "rapl"]
    assert matrix.expand(cfg)[0].measurement["meter"] == ["nvml", "rapl"]


def test_image_figures_need_the_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optional, "renderer_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        config.validate(copy.deepcopy(BASE))
    assert err.value.key == "figure_formats"
    assert "png and svg need vl-convert-python" in str(err.value)
    assert config.validate(with_change("figure_formats", ["html"]))["figure_formats"] == ["html"]


def test_figure_formats_must_hold_html() -> None:
    with pytest.raises(ConfigError) as err:
        config.validate(with_change("figure_formats", ["png"]))
    assert err.value.key == "figure_formats"


def test_spec_json_is_the_spec_dict_as_sorted_json() -> None:
    """The rules pass `to_json()` as a job's params: it must be the stdlib's rendering of the
    spec's dict (``dataclasses.asdict`` then ``json.dumps``), nested sections included."""
    import dataclasses
    import json

    spec = specs.BenchSpec(
        study="s",
        model="m",
        engine="vllm",
        precision="fp16",
        device="cuda",
        batch_size=4,
        input_len=16,
        output_len=8,
        measurement={"meter": "nvml", "cpu_estimate": {"tdp_w": 100.0, "idle_w": 10.0}},
        tensor_parallel=2,
        engine_options={"gpu_memory_utilization": 0.9},
    )
    text = spec.to_json()
    assert text == json.dumps(dataclasses.asdict(spec), sort_keys=True)
    assert json.loads(text)["measurement"]["cpu_estimate"] == {"tdp_w": 100.0, "idle_w": 10.0}
    assert specs.BenchSpec.from_dict(json.loads(text)) == spec
