# Everything that is Python rather than rule: config validation, the experiment matrix,
# wildcard constraints and the small input/params functions the rules use.
import json
import os
import re
import shlex
import subprocess
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from joulebench.study import config as jb_config
from joulebench.study import matrix as jb_matrix
from joulebench.study import specs as jb_specs
from joulebench.study.points import WILDCARD as POINT_WILDCARD
from joulebench.core.errors import ConfigError
from joulebench.models.hub import cache_dir
from joulebench.models.shapes import architecture, parameter_count
from joulebench.results.figures import FIGURES, SERVING_FIGURES
from joulebench.models.precisions import PRECISIONS
from joulebench.provenance.codehash import source_hashes
from joulebench.study.serving_specs import session_specs

try:
    CONFIG = jb_config.validate(config)
    for _key, _reason in jb_matrix.unsupported(CONFIG):
        logger.warning(f"skipped (skip_unsupported: true): {_reason}")
    SPECS = {spec.config_id: spec for spec in jb_matrix.expand(CONFIG)}
    SESSIONS = {s.session_id: s for s in session_specs(CONFIG)}
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

#: Hash of the package code each step runs (its import graph from the step's entry points),
#: passed as a param: Snakemake's code trigger sees only `run:` blocks, so without it an edit to
#: the engine or meters would rerun nothing. Comments and docstrings count for nothing.
CODE = source_hashes()

#: The model cache shared by studies (hub downloads, ct-* checkpoints). Passed to the jobs that
#: fill it, not as a param: moving the cache reruns nothing.
CACHE_DIR = str(cache_dir(CONFIG["cache"].get("dir")))


def model_names(source, matching=True):
    """A wildcard pattern of the models whose source is (or, matching=False, is not) ``source``."""
    names = [
        re.escape(m["name"])
        for m in CONFIG["models"]
        if (m["source"] == source) == matching
    ]
    return "|".join(names) or "(?!)"


#: Files written per figure (`figure_formats`); the figure rules declare only these outputs.
FIGURE_FORMATS = CONFIG["figure_formats"]


def figure_outputs(stem, caption, category, labels, image_in_report=False):
    """The files of one figure, keyed by format in the order html, png, svg: html always, png
    and svg where the config asks. The html (and, with ``image_in_report``, the png) carries the
    report entry, labelled with its format."""
    outputs = {}
    for fmt in ("html", "png", "svg"):
        if fmt not in FIGURE_FORMATS:
            continue
        outputs[fmt] = f"{stem}.{fmt}"
        if fmt == "html" or (fmt == "png" and image_in_report):
            kind = "interactive" if fmt == "html" else "image"
            outputs[fmt] = report(
                outputs[fmt],
                caption=caption,
                category=category,
                labels={**labels, "format": kind},
            )
    return outputs


#: GPUs per serving job: one on a `device: cuda` study, none otherwise (`auto` asks for none,
#: so a cluster never spends GPU hours on a maybe). Profiles pick the scheduler's spelling
#: (`gpu`/`gpu_model` → --gpus, or `gres`), see profiles/slurm.
SERVING_GPUS = 1 if CONFIG["device"] == "cuda" else 0


def bench_gpus(wildcards):
    """GPUs a benchmark job holds: its tensor-parallel size on a cuda study, else none."""
    spec = SPECS[
        f"{wildcards.model}/{wildcards.precision}/{wildcards.engine}/{wildcards.point}"
    ]
    return spec.tensor_parallel if CONFIG["device"] == "cuda" else 0


#: Cores per benchmark job where the run has no core count (a cluster executor without --cores);
#: cluster profiles set it per rule with `set-threads`.
CLUSTER_BENCH_THREADS = 8


#: Memory requests: a base for Python, torch and tokenizer, plus room for two fp32 copies of the
#: weights (loading and casting); models whose shape is unknown before download get a fixed ask.
MEM_BASE_MB = 3000
MEM_UNKNOWN_MODEL_MB = 64000


def job_mem_mb(wildcards):
    """Memory (MB) a job on ``wildcards.model`` asks for, from the model's parameter count."""
    model = jb_specs.model_spec(CONFIG, wildcards.model)
    if model["source"] != "synthetic":
        return MEM_UNKNOWN_MODEL_MB
    params = parameter_count(
        architecture(model["architecture"], model.get("overrides"))
    )
    return MEM_BASE_MB + -(-2 * 4 * params // 2**20)


def bench_threads():
    """Every core of a local run; CLUSTER_BENCH_THREADS under a cluster executor without --cores."""
    try:
        return workflow.cores
    except WorkflowError:
        return CLUSTER_BENCH_THREADS


#: Precisions whose variant is a checkpoint the workflow writes (rule quantize_variant) and
#: the others (rule describe_variant), as wildcard patterns generated from the registry.
CHECKPOINT_PRECISIONS = "|".join(
    re.escape(p.name) for p in PRECISIONS.values() if p.writes_checkpoint
)
ON_LOAD_PRECISIONS = "|".join(
    re.escape(p.name) for p in PRECISIONS.values() if not p.writes_checkpoint
)
#: The serving experiments' ids, as a wildcard pattern (ids may hold dots: `poisson_r0.5`).
EXPERIMENT_IDS = (
    "|".join(
        re.escape(e["id"]) for s in list(SESSIONS.values())[:1] for e in s.experiments
    )
    or "(?!)"
)


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    precision=r"[A-Za-z0-9._-]+",
    engine=r"[A-Za-z0-9._-]+",
    point=POINT_WILDCARD,
    server=r"[A-Za-z0-9._-]+",
    experiment=EXPERIMENT_IDS,


def model_spec_json(wildcards):
    """The model's `models:` entry, as JSON for `joulebench prepare-model`."""
    return json.dumps(jb_specs.model_spec(CONFIG, wildcards.model), sort_keys=True)


def model_config_key(wildcards):
    """The model's key in the config (`models[2]`), for errors about its entry."""
    names = [m["name"] for m in CONFIG["models"]]
    return f"models[{names.index(wildcards.model)}]"


def bench_spec_json(wildcards):
    """The whole configuration of one benchmark job, as JSON (params: edits rerun only it)."""
    key = (
        f"{wildcards.model}/{wildcards.precision}/{wildcards.engine}/{wildcards.point}"
    )
    return SPECS[key].to_json()


def quantization_json():
    """The `quantization:` section, as JSON (params: editing it remakes the variants)."""
    return json.dumps(CONFIG["quantization"], sort_keys=True)


def analysis_json():
    """The `analysis:` section, as JSON (params: editing it reruns only aggregation onwards)."""
    return json.dumps(CONFIG["analysis"], sort_keys=True)


def all_records():
    return [f"results/records/{config_id}.json" for config_id in SPECS]


def serving_spec_json(wildcards):
    """One serving session (server, experiments, load, measurement) as JSON."""
    key = f"{wildcards.model}/{wildcards.precision}/{wildcards.server}"
    return json.dumps(SESSIONS[key].to_dict(), sort_keys=True)


def serving_experiments():
    sessions = list(SESSIONS.values())
    return [e["id"] for e in sessions[0].experiments] if sessions else []


def serving_outputs(ext):
    """The per-experiment files of one session (same experiments in every session)."""
    return expand(
        "results/serving/{{model}}/{{precision}}/{{server}}/{experiment}.{ext}",
        experiment=serving_experiments(),
        ext=ext,
    )


def all_serving_records():
    return [
        f"results/serving/{session}/{experiment}.json"
        for session in SESSIONS
        for experiment in serving_experiments()
    ]


def findings_inputs(wildcards):
    """The tables the findings report reads; the serving table only when the study serves."""
    inputs = {
        "summary": "results/tables/summary.parquet",
        "measurements": "results/tables/measurements.parquet",
        "audit": "results/tables/provenance.json",
    }
    if SESSIONS:
        inputs["serving"] = "results/tables/serving.parquet"
        inputs["serving_requests"] = [
            p[:-5] + ".parquet" for p in all_serving_records()
        ]
    return inputs


def final_outputs():
    plots = expand("results/plots/{figure}.{ext}", figure=FIGURES, ext=FIGURE_FORMATS)
    plots += expand(
        "results/plots/power/{config_id}.{ext}",
        config_id=SPECS,
        ext=FIGURE_FORMATS,
    )
    outputs = [
        "results/tables/measurements.parquet",
        "results/tables/measurements_long.parquet",
        "results/report/findings.html",
        "results/report/findings.md",
        "results/tables/summary.parquet",
        "results/tables/summary.csv",
        *plots,
    ]
    if SESSIONS:
        outputs += ["results/tables/serving.parquet", "results/tables/serving.csv"]
        outputs += expand(
            "results/plots/{figure}.{ext}",
            figure=SERVING_FIGURES,
            ext=FIGURE_FORMATS,
        )
        outputs += expand(
            "results/plots/serving_power/{session}/{experiment}.{ext}",
            session=SESSIONS,
            experiment=serving_experiments(),
            ext=FIGURE_FORMATS,
        )
    return outputs


def run_step(command, log, *positional, **options):
    """Run `joulebench COMMAND` as an argument list (no shell), its output into ``log``.

    Options are written as flags (``model_dir=x`` → ``--model-dir x``; ``quiet=True`` →
    ``--quiet``; ``quiet=False`` → nothing). Rules thus call the very command a user runs by
    hand, and no config string ever reaches a shell. Every step but `prepare-model` runs with
    HF_HUB_OFFLINE=1: benchmark jobs read the prepared directories and never touch the network.
    """
    args = [command, *map(str, positional)]
    env = dict(os.environ)
    if command != "prepare-model":  # only model preparation may reach the hub
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name, value in options.items():
        if value is False:
            continue
        flag = f"--{name.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    with open(log, "w") as handle:
        handle.write(f"$ joulebench {shlex.join(args)}\n")
        handle.flush()
        result = subprocess.run(
            [sys.executable, "-m", "joulebench", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if result.returncode != 0:
        with open(log) as handle:
            tail = "".join(handle.readlines()[-20:])
        raise WorkflowError(
            f"joulebench {command} failed (exit {result.returncode}); end of {log}:\n{tail}"
        )
