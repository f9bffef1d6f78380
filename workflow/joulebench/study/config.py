"""Study configuration: load, fill defaults, validate, and expand into one spec per benchmark job.

This is the only place that turns ``config.yaml`` into the experiment matrix; the Snakefile and
the CLI both call it, so a configuration value reaches the engine by one road.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from joulebench.core.errors import ConfigError
from joulebench.core.hostcpu import resolve_isa
from joulebench.models.precisions import check_device, check_support, get_precision
from joulebench.models.sources import (
    PRESETS,
    architecture,
    check_declared_quantization,
    check_local,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file; returns the config with every default filled in."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("configfile", f"'{path}' is a directory, not a config file")
    if not path.is_file():
        raise ConfigError("configfile", f"file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError("configfile", f"'{path}' is not valid YAML: {problem}{where}") from None
    return validate(data, base_dir=path.parent)


def validate(config: dict[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
    """Check ``config`` against the schema and the rules the schema cannot say; fill defaults."""
    if not isinstance(config, dict):
        raise ConfigError("<top>", f"the config must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0])
    given_baseline = set((config.get("analysis") or {}).get("baseline") or {})
    config = _with_defaults(copy.deepcopy(config), schema)
    _check_semantics(config, base_dir or Path.cwd())
    _check_baseline(config, given_baseline)
    return config


def _key(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return ConfigError(
            _key([*path, extra[0]]), f"unknown key; allowed here: {', '.join(allowed)}"
        )
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return ConfigError(_key([*path, missing]), "is required but missing")
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return ConfigError(_key(path), f"value {err.instance!r} is not allowed; allowed: {allowed}")
    return ConfigError(_key(path), f"value {err.instance!r} is invalid: {err.message}")


def _with_defaults(node: Any, schema: dict[str, Any]) -> Any:
    """Fill ``default`` values from the schema into ``node`` (recursively, objects and arrays)."""
    if isinstance(node, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in node and "default" in sub:
                node[name] = copy.deepcopy(sub["default"])
            if name in node:
                node[name] = _with_defaults(node[name], sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [_with_defaults(item, schema["items"]) for item in node]
    return node


def _check_semantics(config: dict[str, Any], base_dir: Path) -> None:
    seen: set[str] = set()
    for i, model in enumerate(config["models"]):
        key = f"models[{i}]"
        if model["name"] in seen:
            raise ConfigError(f"{key}.name", f"duplicate model name '{model['name']}'")
        seen.add(model["name"])
        _check_model_source(model, key, base_dir)
        _check_narrowing(config, model, key)
    _check_meter(config["measurement"]["meter"])
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
    if images and not renderer_available():
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


def _check_baseline(config: dict[str, Any], given: set[str]) -> None:
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


#: Matrix lists a `models:` entry may narrow for itself (e.g. a large model in bf16 only).
NARROWABLE = ("precisions", "batch_sizes")


def renderer_available() -> bool:
    """Whether vl-convert-python, altair's PNG/SVG renderer (and HTML inliner), is importable."""
    return importlib.util.find_spec("vl_convert") is not None


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


def model_precisions(config: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """The precisions a model runs: its own list if it narrows the study's, `prequantized`
    alone for a quantized checkpoint."""
    if model.get("quantization"):
        return ["prequantized"]
    return [p for p in model.get("precisions", config["precisions"]) if p != "prequantized"]


def model_batch_sizes(config: dict[str, Any], model: dict[str, Any]) -> list[int]:
    """The batch sizes a model runs: its own list if it narrows the study's."""
    return list(model.get("batch_sizes", config["batch_sizes"]))


Combination = tuple[dict[str, Any], str, str, int]


def _combinations(
    config: dict[str, Any],
) -> list[tuple[Combination, tuple[str, str] | None]]:
    """Every (model, precision, engine, tp) with None or the (key, reason) it cannot run."""
    out: list[tuple[Combination, tuple[str, str] | None]] = []
    gpu_cc = (config.get("gpu") or {}).get("compute_capability")
    cpu_isa = resolve_isa((config.get("cpu") or {}).get("isa"))
    for model in config["models"]:
        for precision in model_precisions(config, model):
            for engine in config["engines"]:
                for tp in config["tensor_parallel_sizes"]:
                    combo = (model, precision, engine, tp)
                    key = f"precisions[{config['precisions'].index(precision)}]"
                    try:
                        check_support(
                            get_precision(precision),
                            engine,
                            config["device"],
                            key,
                            gpu_cc,
                            model.get("quantization"),
                            cpu_isa,
                        )
                        _check_tensor_parallel(engine, config["device"], tp)
                    except ConfigError as err:
                        where = f"{model['name']}/{precision}/{engine}" + (
                            f"/tp{tp}" if tp > 1 else ""
                        )
                        reason = str(err).split(": ", 1)[1]
                        out.append((combo, (err.key, f"{where}: {reason}")))
                        continue
                    out.append((combo, None))
    return out


def unsupported(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, reason) of every combination in the matrix that cannot run."""
    return [reason for _, reason in _combinations(config) if reason is not None]


def _check_tensor_parallel(engine: str, device: str, tp: int) -> None:
    if tp > 1 and (engine != "vllm" or device == "cpu"):
        raise ConfigError(
            "tensor_parallel_sizes",
            f"tensor parallel size {tp} needs the vllm engine on cuda "
            f"(this combination: engine {engine}, device {device})",
        )


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _check_meter(value: str | list[str]) -> None:
    from joulebench.core.errors import MeterError
    from joulebench.energy import meter_names

    try:
        meter_names(value)
    except MeterError as err:
        raise ConfigError(
            "measurement.meter", str(err).removeprefix("measurement.meter: ")
        ) from None


def _check_external_meter(config: dict[str, Any], server: str, key: str) -> None:
    """An external server may be measured only by a hardware meter of this host."""
    from joulebench.energy import HARDWARE_METERS
    from joulebench.energy.meters import resolve
    from joulebench.study.serving_specs import external_meter_reason

    m = config["measurement"]
    if m["meter"] == "auto" and config["device"] in ("cuda", "auto"):
        return  # NVML on the job's GPU, if it has one: the job checks again where it runs
    names = resolve(m["meter"], config["device"], m["powercap_root"])
    if not set(names) <= set(HARDWARE_METERS):
        reason = external_meter_reason(server, m["meter"], names)
        raise ConfigError("measurement.meter", f"{reason} ({key})")


_SOURCE_KEYS = {"synthetic": ("architecture",), "hub": ("repo", "revision"), "local": ("path",)}


def _check_model_source(model: dict[str, Any], key: str, base_dir: Path) -> None:
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
        from joulebench.models.sources import max_context

        return max_context(Path(model["path"]))
    return None


@dataclass(frozen=True)
class BenchSpec:
    """Everything one benchmark job needs; its hash identifies the measurement."""

    study: str
    model: str
    engine: str
    precision: str
    device: str
    batch_size: int
    input_len: int
    output_len: int
    measurement: dict[str, Any] = field(default_factory=dict)
    tensor_parallel: int = 1
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> str:
        """The shape part of the job's name (with the GPU count when tensor parallel)."""
        tp = f"_tp{self.tensor_parallel}" if self.tensor_parallel > 1 else ""
        return f"bs{self.batch_size}_in{self.input_len}_out{self.output_len}{tp}"

    @property
    def config_id(self) -> str:
        return f"{self.model}/{self.precision}/{self.engine}/{self.point}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchSpec:
        return cls(**data)


def _bench_schema() -> dict[str, Any]:
    """A benchmark spec's JSON schema, made of the study schema's own pieces."""
    props = load_schema()["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            f.name
            for f in fields(BenchSpec)
            if f.default is MISSING and f.default_factory is MISSING
        ],
        "properties": {
            "study": props["study"],
            "model": {"type": "string", "minLength": 1},
            "engine": props["engines"]["items"],
            "precision": {"type": "string"},
            "device": props["device"],
            "batch_size": props["batch_sizes"]["items"],
            "input_len": props["input_lengths"]["items"],
            "output_len": props["output_lengths"]["items"],
            "measurement": props["measurement"],
            "tensor_parallel": props["tensor_parallel_sizes"]["items"],
            "engine_options": {"type": "object"},
        },
    }


def bench_spec(data: Any, where: Callable[[str], str]) -> BenchSpec:
    """One benchmark's spec from a dict (``--spec-json`` or the command's flags), checked.

    Missing, unknown and out-of-range keys raise ArgumentError at ``where(key)`` (the flag or
    the JSON key the value came from); the measurement and vllm sections get their defaults.
    """
    from joulebench.core.inputs import ArgumentError, keys_of

    def fail(err: ConfigError) -> ArgumentError:
        return ArgumentError(where(err.key), err.message)

    if not isinstance(data, dict):
        raise ArgumentError(where("<top>"), f"must be an object, got {type(data).__name__}")
    schema = _bench_schema()
    keys_of(data, where("<top>"), schema["required"], schema["properties"])
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        raise fail(_schema_error(errors[0]))
    data = _with_defaults(copy.deepcopy(data), schema)
    if data["engine"] == "vllm":
        vllm = load_schema()["properties"]["vllm"]
        errors = list(jsonschema.Draft202012Validator(vllm).iter_errors(data["engine_options"]))
        if errors:
            raise fail(_schema_error(errors[0]))
        data["engine_options"] = _with_defaults(data["engine_options"], vllm)
    try:
        get_precision(data["precision"], "precision")
        _check_meter(data["measurement"]["meter"])
        _check_tensor_parallel(data["engine"], data["device"], data["tensor_parallel"])
    except ConfigError as err:
        raise fail(err) from None
    return BenchSpec.from_dict(data)


def check_model_entry(entry: Any, key: str, base_dir: Path | None = None) -> dict[str, Any]:
    """One ``models:`` entry on its own (what `joulebench prepare-model` is given), defaults
    filled; errors name ``key`` (e.g. ``models[0]``) and the entry's key at fault."""
    schema = load_schema()["properties"]["models"]["items"]
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(entry),
        key=lambda e: list(e.absolute_path),
    )
    if errors:
        err = _schema_error(errors[0])
        sub = "" if err.key == "<top>" else err.key
        raise ConfigError(f"{key}.{sub}" if sub else key, err.message)
    entry = _with_defaults(copy.deepcopy(entry), schema)
    _check_model_source(entry, key, base_dir or Path.cwd())
    return entry


def expand(config: dict[str, Any]) -> list[BenchSpec]:
    """The experiment matrix: models × precisions × engines × tensor parallel × batch × input ×
    output lengths, less the combinations that cannot run (an error unless skip_unsupported)."""
    runnable = [combo for combo, reason in _combinations(config) if reason is None]
    specs = [
        BenchSpec(
            study=config["study"],
            model=model["name"],
            engine=engine,
            precision=precision,
            device=config["device"],
            batch_size=batch,
            input_len=inp,
            output_len=out,
            measurement=copy.deepcopy(config["measurement"]),
            tensor_parallel=tp,
            engine_options=copy.deepcopy(config["vllm"]) if engine == "vllm" else {},
        )
        for (model, precision, engine, tp) in runnable
        for batch, inp, out in itertools.product(
            model_batch_sizes(config, model),
            config["input_lengths"],
            config["output_lengths"],
        )
    ]
    if not specs:
        raise ConfigError("<top>", "the experiment matrix is empty")
    return specs


def model_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``models:`` entry called ``name``."""
    for model in config["models"]:
        if model["name"] == name:
            return model
    raise ConfigError("models", f"no model named '{name}'")
