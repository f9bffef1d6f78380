"""What a config must satisfy beyond its schema: model sources, narrowed lists, meters, runnable
combinations, context lengths, the analysis baseline and the ``serving:`` section.

Every check raises ConfigError naming the key at fault and what is allowed there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from joulebench.core import optional
from joulebench.core.errors import ConfigError
from joulebench.models.precisions import check_device, get_precision
from joulebench.models.shapes import (
    PRESETS,
    architecture,
    check_declared_quantization,
    check_local,
)
from joulebench.study.matrix import NARROWABLE, unsupported


def check_semantics(config: dict[str, Any], base_dir: Path) -> None:
    """Everything ``config`` (defaults filled) must satisfy beyond its schema; relative paths
    are resolved against ``base_dir`` (the config file's folder) in place."""
    seen: set[str] = set()
    for i, model in enumerate(config["models"]):
        key = f"models[{i}]"
        if model["name"] in seen:
            raise ConfigError(f"{key}.name", f"duplicate model name '{model['name']}'")
        seen.add(model["name"])
        check_model_source(model, key, base_dir)
        _check_narrowing(config, model, key)
    check_meter(config["measurement"]["meter"])
    for i, name in enumerate(config["precisions"]):
        check_device(get_precision(name, f"precisions[{i}]"), config["device"], f"precisions[{i}]")
    _check_prequantized_models(config)
    dropped = unsupported(config)
    if dropped and not config["skip_unsupported"]:
        key, message = dropped[0]
        raise ConfigError(key, message + " (or set skip_unsupported: true to drop it)")
    get_precision(config["analysis"]["baseline"]["precision"], "analysis.baseline.precision")
    estimate = config["measurement"]["cpu_estimate"]
    if estimate["idle_w"] > estimate["tdp_w"]:
        raise ConfigError(
            "measurement.cpu_estimate.idle_w",
            f"{estimate['idle_w']} W is above tdp_w ({estimate['tdp_w']} W): the estimate's "
            "dynamic power (tdp_w - idle_w) would be negative; allowed: 0 <= idle_w <= tdp_w",
        )
    for i, model in enumerate(config["models"]):
        _check_context(
            model,
            f"models[{i}] '{model['name']}'",
            ("input_lengths", config["input_lengths"]),
            ("output_lengths", config["output_lengths"]),
        )
    if config.get("serving"):
        _check_serving(config, base_dir)
    images = [f for f in config["figure_formats"] if f != "html"]
    if images and not optional.renderer_available():
        raise ConfigError(
            "figure_formats",
            f"{' and '.join(images)} need vl-convert-python, which is not installed here; "
            "install it or set figure_formats: [html]",
        )


def _check_serving(config: dict[str, Any], base_dir: Path) -> None:
    """What the schema cannot say about ``serving:`` (names, rates, files, combinations)."""
    from joulebench.study.serving_specs import ServerSpec, check_server
    from joulebench.workload import arrivals, shaping

    serving = config["serving"]
    names = [m["name"] for m in config["models"]]
    for i, name in enumerate(serving.get("models") or []):
        if name not in names:
            raise ConfigError(
                f"serving.models[{i}]", f"no model named '{name}'; models: {', '.join(names)}"
            )
    seen: set[str] = set()
    for i, server in enumerate(serving["servers"]):
        key = f"serving.servers[{i}]"
        if server["name"] in seen:
            raise ConfigError(f"{key}.name", f"duplicate server name '{server['name']}'")
        seen.add(server["name"])
        spec = ServerSpec.from_dict(server)
        check_server(spec, key)
        if spec.kind == "external":
            _check_external_meter(config, spec.name, key)
    prompts = serving["prompts"]
    if prompts["source"] == "file":
        if not prompts.get("path"):
            raise ConfigError("serving.prompts.path", "is required for source 'file'")
        prompts["path"] = _resolve(prompts["path"], base_dir)
        if not Path(prompts["path"]).is_file():
            raise ConfigError("serving.prompts.path", f"file '{prompts['path']}' does not exist")
    elif "path" in prompts:
        raise ConfigError("serving.prompts.path", "only applies to source 'file'")
    seen = set()
    for i, entry in enumerate(serving["arrivals"]):
        key = f"serving.arrivals[{i}]"
        if entry["name"] in seen:
            raise ConfigError(f"{key}.name", f"duplicate arrival name '{entry['name']}'")
        seen.add(entry["name"])
        process = entry["process"]
        entry = serving["arrivals"][i] = arrivals.checked_entry(entry, key, serving.get("rates"))
        if process == arrivals.REPLAY:
            path = entry[arrivals.REPLAY] = _resolve(entry[arrivals.REPLAY], base_dir)
            arrivals.read_replay(Path(path), serving["requests"], f"{key}.{arrivals.REPLAY}")
        shape = entry.get("shaping")
        if shape:
            shaping.check(shaping.ShapingSpec(**shape), f"{key}.shaping")
            if process == "closed" and shape["policy"] != "pass":
                raise ConfigError(
                    f"{key}.shaping",
                    "closed-loop users already bound concurrency; shaping applies to open-loop "
                    "arrivals only",
                )
    steady = serving["steady_batch"]
    if steady != "auto" and steady > serving["requests"]:
        raise ConfigError(
            "serving.steady_batch",
            f"{steady} requests in flight cannot be reached with serving.requests "
            f"{serving['requests']}; allowed: 1 to {serving['requests']}, or auto",
        )
    for model in config["models"]:
        _check_context(
            model,
            f"model '{model['name']}'",
            ("serving.input_len", [serving["input_len"]]),
            ("serving.output_len", [serving["output_len"]]),
        )


def _check_context(
    model: dict[str, Any],
    name: str,
    inputs: tuple[str, list[int]],
    outputs: tuple[str, list[int]],
) -> None:
    """Prompt and prompt + output within the model's context; the error names the key at fault:
    the input length when a prompt alone leaves no room for one output token, else the output
    length that overflows."""
    context = _known_context(model)
    if context is None:
        return
    in_key, in_lengths = inputs
    out_key, out_lengths = outputs
    longest_in = max(in_lengths)
    if longest_in >= context:
        key = (
            in_key if in_key.startswith("serving.") else f"{in_key}[{in_lengths.index(longest_in)}]"
        )
        raise ConfigError(
            key,
            f"input {longest_in} tokens leave no room for output in the context of {name} "
            f"({context} tokens); allowed: below {context}",
        )
    longest_out = max(out_lengths)
    if longest_in + longest_out > context:
        key = (
            out_key
            if out_key.startswith("serving.")
            else f"{out_key}[{out_lengths.index(longest_out)}]"
        )
        raise ConfigError(
            key,
            f"input {longest_in} + output {longest_out} tokens exceed the context of {name} "
            f"({context} tokens); allowed: at most {context - longest_in} with that input",
        )


def check_baseline(config: dict[str, Any], given: set[str]) -> None:
    """``analysis.baseline`` names a precision and batch size the study runs.

    A value the config sets must be one of them; a default the study does not run (fp32, batch 1)
    becomes the first precision listed and the smallest batch size, so the ratio columns are
    never empty by default.
    """
    baseline = config["analysis"]["baseline"]
    ran = {"precision": config["precisions"], "batch_size": config["batch_sizes"]}
    fallback = {"precision": config["precisions"][0], "batch_size": min(config["batch_sizes"])}
    for name, values in ran.items():
        if baseline[name] in values:
            continue
        if name not in given:
            baseline[name] = fallback[name]
            continue
        listed = "precisions" if name == "precision" else "batch_sizes"
        raise ConfigError(
            f"analysis.baseline.{name}",
            f"{baseline[name]!r} is not run by this study; allowed: one of {listed} "
            f"({', '.join(map(str, values))})",
        )


def _check_prequantized_models(config: dict[str, Any]) -> None:
    """A model that ships quantized runs `prequantized` only, and only such models do."""
    listed = "prequantized" in config["precisions"]
    declared = False
    for i, model in enumerate(config["models"]):
        fmt = model.get("quantization")
        if fmt is None:
            continue
        declared = True
        if model["source"] == "synthetic":
            raise ConfigError(
                f"models[{i}].quantization", "applies to hub and local checkpoints only"
            )
        if not listed:
            raise ConfigError(
                f"models[{i}].quantization",
                f"model '{model['name']}' ships a {fmt} checkpoint; add 'prequantized' to "
                "precisions to run it as shipped",
            )
    if listed and not declared:
        raise ConfigError(
            f"precisions[{config['precisions'].index('prequantized')}]",
            "prequantized needs a model that declares its checkpoint's format "
            "(models[].quantization: gptq, awq, compressed-tensors or fp8)",
        )


def _check_narrowing(config: dict[str, Any], model: dict[str, Any], key: str) -> None:
    """A model's own ``precisions``/``batch_sizes`` must be taken from the study's lists."""
    for name in NARROWABLE:
        for j, value in enumerate(model.get(name, [])):
            if value not in config[name]:
                allowed = ", ".join(map(str, config[name]))
                raise ConfigError(
                    f"{key}.{name}[{j}]",
                    f"'{value}' is not in the study's {name}; allowed: {allowed}",
                )


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def check_meter(value: str | list[str]) -> None:
    from joulebench.core.errors import MeterError
    from joulebench.energy.choice import meter_names

    try:
        meter_names(value)
    except MeterError as err:
        raise ConfigError(
            "measurement.meter", str(err).removeprefix("measurement.meter: ")
        ) from None


def _check_external_meter(config: dict[str, Any], server: str, key: str) -> None:
    """An external server may be measured only by a hardware meter of this host."""
    from joulebench.energy.choice import resolve
    from joulebench.study.serving_specs import external_meter_reason

    m = config["measurement"]
    if m["meter"] == "auto" and config["device"] in ("cuda", "auto"):
        return  # NVML on the job's GPU, if it has one: the job checks again where it runs
    names = resolve(m["meter"], config["device"], m["powercap_root"])
    reason = external_meter_reason(server, m["meter"], names)
    if reason:
        raise ConfigError("measurement.meter", f"{reason} ({key})")


_SOURCE_KEYS = {"synthetic": ("architecture",), "hub": ("repo", "revision"), "local": ("path",)}


def check_model_source(model: dict[str, Any], key: str, base_dir: Path) -> None:
    source = model["source"]
    for needed in _SOURCE_KEYS[source]:
        if needed not in model:
            raise ConfigError(f"{key}.{needed}", f"is required for source '{source}'")
    for other, keys in _SOURCE_KEYS.items():
        for k in keys:
            if other != source and k in model and k not in _SOURCE_KEYS[source]:
                raise ConfigError(f"{key}.{k}", f"only applies to source '{other}', not '{source}'")
    if source == "synthetic":
        architecture(model["architecture"], model.get("overrides"), key=f"{key}.architecture")
    if source == "hub" and not re.fullmatch(r"[0-9a-f]{40}", model["revision"]):
        raise ConfigError(
            f"{key}.revision",
            f"'{model['revision']}' is not a commit; pin the full 40-character commit hash "
            "(a branch or tag moves, so the study would not be reproducible)",
        )
    if source == "local":
        path = Path(model["path"])
        model["path"] = str(path if path.is_absolute() else (base_dir / path).resolve())
        check_local(Path(model["path"]), key=f"{key}.path")
        check_declared_quantization(
            Path(model["path"]), model.get("quantization"), f"{key}.quantization"
        )


def _known_context(model: dict[str, Any]) -> int | None:
    if model["source"] == "synthetic":
        arch = {**PRESETS[model["architecture"]], **(model.get("overrides") or {})}
        return int(arch["max_position_embeddings"])
    if model["source"] == "local":
        from joulebench.models.shapes import max_context

        return max_context(Path(model["path"]))
    return None
