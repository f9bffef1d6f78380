"""The serving study as data: server specs, experiments and one spec per serving session.

Everything here is plain data and its validation, so that building the workflow's DAG (and
validating a config) never imports the serving stage (aiohttp, the load generator): a
``serving.servers[]`` entry (:class:`ServerSpec`, :func:`check_server`), the experiments that
``serving.arrivals`` × rates expand to (:class:`Experiment`), and one :class:`SessionSpec` per
model × precision × server (:func:`session_specs`), with the meter check a session makes before
its server starts (:func:`check_meter`). Running them is :mod:`joulebench.serving`'s job.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from joulebench.core.errors import ConfigError
from joulebench.workload import arrivals
from joulebench.workload.arrivals import ArrivalSpec
from joulebench.workload.shaping import ShapingSpec

#: Server kinds: ``transformers`` (``transformers serve``), ``vllm`` (its OpenAI server),
#: ``tgi`` (Text Generation Inference from a command template), ``external`` (a running URL).
KINDS = ("transformers", "vllm", "tgi", "external")
DEFAULT_PROTOCOL = {"transformers": "openai", "vllm": "openai", "tgi": "tgi", "external": "openai"}
#: The fields a ``tgi`` command template may use.
TEMPLATE_FIELDS = ("model_dir", "host", "port", "dtype", "name")


@dataclass(frozen=True)
class ServerSpec:
    """One ``serving.servers[]`` entry."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)  # → --flag value (transformers, vllm)
    command: list[str] | None = None  # tgi: template, fields {model_dir} {host} {port} {dtype}
    url: str | None = None  # external
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    health_path: str = "/health"
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 15.0
    env: dict[str, str] = field(default_factory=dict)
    protocol: str | None = None
    model_name: str | None = None  # the request's "model" field (default: what the kind serves)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSpec:
        return cls(**data)

    @property
    def wire_protocol(self) -> str:
        return self.protocol or DEFAULT_PROTOCOL[self.kind]


def check_server(spec: ServerSpec, key: str) -> None:
    """Config errors that name the key, found before any job runs."""
    if spec.kind not in KINDS:
        raise ConfigError(f"{key}.kind", f"unknown server kind '{spec.kind}'; allowed: {KINDS}")
    if spec.kind == "tgi":
        if not spec.command:
            raise ConfigError(f"{key}.command", "kind 'tgi' needs a command template (a list)")
        for i, arg in enumerate(spec.command):
            try:
                arg.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
            except (KeyError, IndexError, ValueError) as err:
                raise ConfigError(
                    f"{key}.command[{i}]",
                    f"bad template field in {arg!r} ({err}); allowed: "
                    + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
                ) from None
    elif spec.command:
        raise ConfigError(f"{key}.command", f"only applies to kind 'tgi', not '{spec.kind}'")
    if spec.kind == "external":
        if not spec.url or not spec.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url", f"kind 'external' needs an http(s) URL, got {spec.url}")
    elif spec.url:
        raise ConfigError(f"{key}.url", f"only applies to kind 'external', not '{spec.kind}'")
    if spec.options and spec.kind not in ("transformers", "vllm"):
        raise ConfigError(
            f"{key}.options", f"only applies to transformers and vllm, not {spec.kind}"
        )


@dataclass(frozen=True)
class Experiment:
    """One load phase: an arrival process (with its rate) and a shaping policy."""

    id: str
    pattern: str  # the arrival entry's name, e.g. "poisson" or "poisson-grouped"
    arrival: dict[str, Any]
    shaping: dict[str, Any] = field(default_factory=lambda: {"policy": "pass"})

    @property
    def arrival_spec(self) -> ArrivalSpec:
        return ArrivalSpec(**self.arrival)

    @property
    def shaping_spec(self) -> ShapingSpec:
        return ShapingSpec(**self.shaping)


@dataclass(frozen=True)
class SessionSpec:
    """Everything one serving job needs (passed as JSON through Snakemake ``params:``)."""

    study: str
    model: str
    precision: str
    device: str
    server: dict[str, Any]
    experiments: list[dict[str, Any]]
    load: dict[str, Any]
    measurement: dict[str, Any]

    @property
    def session_id(self) -> str:
        return f"{self.model}/{self.precision}/{self.server['name']}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionSpec:
        return cls(**data)


def experiment_id(name: str, arrival: dict[str, Any]) -> str:
    """``<name>_r<rate>`` for a rate process, ``<name>_u<users>`` for a closed loop, else
    ``<name>``."""
    if arrival["process"] in arrivals.RATE_PROCESSES:
        return f"{name}_r{arrival['rate']:g}"
    if arrival["process"] == "closed":
        return f"{name}_u{arrival['users']}"
    return name


def expand_experiments(serving: dict[str, Any]) -> list[Experiment]:
    """``serving.arrivals`` × their rates → experiments (already validated)."""
    out = []
    for entry in serving["arrivals"]:
        params = arrivals.spec_params(entry)
        shape = entry.get("shaping") or {"policy": "pass"}
        if entry["process"] in arrivals.RATE_PROCESSES:
            for rate in entry.get("rates") or serving["rates"]:
                arrival = params | {"rate": float(rate)}
                out.append(
                    Experiment(experiment_id(entry["name"], arrival), entry["name"], arrival, shape)
                )
        else:
            out.append(
                Experiment(experiment_id(entry["name"], params), entry["name"], params, shape)
            )
    return out


def session_specs(config: dict[str, Any]) -> list[SessionSpec]:
    """One session per serving model × precision × server (empty without ``serving:``)."""
    serving = config.get("serving")
    if not serving:
        return []
    experiments = [asdict(e) for e in expand_experiments(serving)]
    models = serving.get("models") or [m["name"] for m in config["models"]]
    load = {
        k: copy.deepcopy(serving[k])
        for k in ("requests", "warmup_requests", "input_len", "output_len", "prompts", "timeout_s")
    } | {"seed": serving["seed"]}
    measurement = {
        "meter": config["measurement"]["meter"],
        "cpu_estimate": copy.deepcopy(config["measurement"]["cpu_estimate"]),
        "powercap_root": config["measurement"]["powercap_root"],
    } | {
        k: serving[k]
        for k in ("idle_s", "trace_interval_s", "steady_batch", "attribution_tolerance")
    }
    return [
        SessionSpec(
            study=config["study"],
            model=model,
            precision=precision,
            device=config["device"],
            server=ServerSpec.from_dict(server).to_dict(),
            experiments=experiments,
            load=load,
            measurement=measurement,
        )
        for model in models
        for precision in serving["precisions"]
        for server in serving["servers"]
    ]


def check_meter(spec: SessionSpec, key: str = "measurement.meter") -> list[str]:
    """The meters the session will use; an estimate for an ``external`` server is refused."""
    from joulebench.energy.choice import resolve

    m = spec.measurement
    names = resolve(m["meter"], spec.device, m.get("powercap_root"))
    if spec.server["kind"] == "external":
        reason = external_meter_reason(spec.server["name"], m["meter"], names)
        if reason:
            raise ConfigError(key, reason)
    return names


def external_meter_reason(server: str, asked: Any, names: list[str]) -> str | None:
    """Why meters ``names`` cannot measure an ``external`` server (one line, for config
    errors); None where they all read this host's hardware."""
    from joulebench.energy.choice import HARDWARE_METERS

    if set(names) <= set(HARDWARE_METERS):
        return None
    how = f"'auto' resolves to {names} here, which is" if asked == "auto" else f"{asked} asks for"
    return (
        f"server '{server}' is external (it may run on another host), but {how} the CPU "
        "estimate, which models this host's CPU time of a process it can see; measure it with "
        f"a hardware meter of this host ({', '.join(HARDWARE_METERS)}) or use a server kind "
        "that joulebench starts"
    )
