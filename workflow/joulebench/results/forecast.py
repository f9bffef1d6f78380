"""What a study will cost before it is submitted: jobs, GPU-hours and energy from a dry run.

Input is the text of ``snakemake --dry-run`` run with the profile the study will use (so the
runtimes, GPU requests and groups are the ones the scheduler will see). Once results exist,
measured durations (Snakemake's ``results/benchmarks/**.tsv``) and measured average power (the
records) of the same or the most similar configuration replace the requested runtimes.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joulebench.core.errors import JoulebenchError
from joulebench.study.points import Point, PointIdError, parse_point_id

#: H100 SXM board power (W): the upper bound used for energy when nothing was measured yet.
DEFAULT_GPU_POWER_W = 700.0
BENCH_RULE = "benchmark"

_RULE = re.compile(r"^(?P<indent>\s*)(?P<local>local)?rule (?P<rule>\w+):\s*$")
_GROUP = re.compile(r"^\S.*Group job (?P<group>\S+) \(jobs in lexicogr\. order\):")
_FIELD = re.compile(r"^\s+(?P<key>wildcards|threads|resources|output): (?P<value>.*)$")


class ForecastError(JoulebenchError):
    """The dry-run text or the results could not be read."""


@dataclass
class PlannedJob:
    """One job of the dry run, with what it asks the scheduler for."""

    rule: str
    local: bool
    group: str | None = None
    group_instance: int | None = None
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)

    @property
    def runtime_min(self) -> float | None:
        """Requested runtime in minutes (Snakemake prints it normalised to minutes)."""
        value = self.resources.get("runtime")
        return float(value) if value not in (None, "") else None

    @property
    def gpus(self) -> int:
        """GPUs requested, whichever spelling (``gpu=N`` or ``gres=gpu[:type]:N``)."""
        gpu = self.resources.get("gpu")
        if gpu not in (None, "", "0"):
            return int(gpu)
        gres = self.resources.get("gres", "")
        if gres.startswith("gpu"):
            last = gres.split(":")[-1]
            return int(last) if last.isdigit() else 1
        return 0

    @property
    def config_id(self) -> str | None:
        """``model/precision/engine/point`` for a benchmark job, else None."""
        w = self.wildcards
        if all(k in w for k in ("model", "precision", "engine", "point")):
            return f"{w['model']}/{w['precision']}/{w['engine']}/{w['point']}"
        return None


#: Where the workflow's rules live (the package sits in workflow/joulebench).
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
_LOCALRULES = re.compile(r"^localrules:\s*\n((?:[ \t]+\w+,?[ \t]*\n?)+)", re.MULTILINE)


def local_rules(rules_dir: Path = RULES_DIR) -> set[str]:
    """Rules that run on the submitting host, from the ``localrules:`` blocks of ``rules_dir``.

    A dry run does not mark them, so they are read from the rule files; ``all`` (no action)
    never goes to a scheduler either.
    """
    names = {"all"}
    files = sorted(rules_dir.glob("*.smk"))
    if not files:
        raise ForecastError(f"no rule files (*.smk) in {rules_dir}")
    for smk in files:
        for block in _LOCALRULES.findall(smk.read_text()):
            names.update(n.strip() for n in block.replace(",", " ").split())
    return names


def parse_dry_run(text: str, local: set[str] | None = None) -> list[PlannedJob]:
    """The jobs of a ``snakemake --dry-run`` output (group jobs keep their group instance).

    ``local`` names the rules that run on the submitting host (see ``local_rules``).
    """
    local = local or set()
    if "Nothing to be done" in text:
        return []
    if "Job stats:" not in text:
        raise ForecastError(
            "this is not the output of `snakemake --dry-run` (no 'Job stats:' table found)"
        )
    jobs: list[PlannedJob] = []
    group: str | None = None
    instance = 0
    current: PlannedJob | None = None
    for line in text.splitlines():
        if m := _GROUP.match(line):
            group, instance = m.group("group"), instance + 1
            current = None
        elif m := _RULE.match(line):
            if not m.group("indent"):
                group = None
            current = PlannedJob(
                rule=m.group("rule"),
                local=bool(m.group("local")) or m.group("rule") in local,
                group=group,
                group_instance=instance if group else None,
            )
            jobs.append(current)
        elif current is not None and (m := _FIELD.match(line)):
            key, value = m.group("key"), m.group("value").strip()
            if key == "threads":
                current.threads = int(value)
            elif key in ("wildcards", "resources"):
                setattr(current, key, _pairs(value))
    return jobs


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(", "):
        key, sep, value = item.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Measured:
    """What one finished configuration cost: wall seconds and average power while measured."""

    config_id: str
    seconds: float
    avg_power_w: float | None
    meter: str | None


def load_history(results: Path) -> dict[str, Measured]:
    """Measured durations (benchmark TSVs) and power (records) of finished configurations."""
    bench_dir = results / "benchmarks" / BENCH_RULE
    history: dict[str, Measured] = {}
    for tsv in sorted(bench_dir.rglob("*.tsv")) if bench_dir.is_dir() else []:
        config_id = tsv.relative_to(bench_dir).with_suffix("").as_posix()
        try:
            parse_point_id(config_id.rpartition("/")[2])
        except PointIdError as err:
            raise ForecastError(f"{tsv}: not a benchmark job's file: {err}") from None
        with tsv.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        seconds = [float(r["s"]) for r in rows if r.get("s") not in (None, "", "NA")]
        if not seconds:
            raise ForecastError(f"{tsv}: no wall-clock seconds (column 's')")
        power, meter = _record_power(results / "records" / f"{config_id}.json")
        history[config_id] = Measured(config_id, sum(seconds) / len(seconds), power, meter)
    return history


def _record_power(path: Path) -> tuple[float | None, str | None]:
    """Average power over a record's measured windows (prefill and full), and its meter."""
    if not path.is_file():
        return None, None
    record = json.loads(path.read_text())
    runs = [r for r in record.get("runs", []) if r.get("phase") in ("prefill", "full")]
    time_s = sum(r["time_s"] * max(r.get("window_repeats", 1), 1) for r in runs)
    energy = sum(r["energy_j"] * max(r.get("window_repeats", 1), 1) for r in runs)
    power = energy / time_s if time_s > 0 else None
    return power, record.get("meter", {}).get("source")


def _distance(a: Point, b: Point) -> tuple[float, float]:
    """How far apart two points are: first the |log2| ratio of their GPUs (a job's power and
    time depend on the GPUs it holds more than on its shape), then the summed |log2| ratios of
    batch size, input and output length."""

    def log2_ratio(x: int, y: int) -> float:
        return abs(math.log2(x / y))

    return (
        log2_ratio(a.tensor_parallel, b.tensor_parallel),
        log2_ratio(a.batch_size, b.batch_size)
        + log2_ratio(a.input_len, b.input_len)
        + log2_ratio(a.output_len, b.output_len),
    )


def most_similar(config_id: str, history: dict[str, Measured]) -> tuple[Measured, str] | None:
    """The measured configuration closest to ``config_id`` and how it matched.

    ``exact``: the same configuration; ``similar``: same model, precision and engine at the
    nearest tensor-parallel size, then the nearest batch size and lengths. None when no
    configuration of that kind was measured.
    """
    if config_id in history:
        return history[config_id], "exact"
    prefix, _, point = config_id.rpartition("/")
    wanted = parse_point_id(point)
    candidates = [m for cid, m in history.items() if cid.rpartition("/")[0] == prefix]
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda m: _distance(wanted, parse_point_id(m.config_id.rpartition("/")[2])),
    )
    return best, "similar"


@dataclass
class RuleCost:
    """The cost of one rule's jobs."""

    rule: str
    jobs: int = 0
    local: bool = False
    gpus_per_job: int = 0
    requested_h: float = 0.0
    requested_gpu_h: float = 0.0


@dataclass
class Forecast:
    """A dry run's cost: per rule, scheduler submissions, and (with history) measured estimates."""

    rules: list[RuleCost]
    submissions: int
    groups: dict[str, int]
    gpu_power_w: float
    matched: Counter[str] = field(default_factory=Counter)
    measured_gpu_h: float | None = None
    measured_energy_kwh: float | None = None
    measured_meters: list[str] = field(default_factory=list)

    @property
    def requested_gpu_h(self) -> float:
        return sum(r.requested_gpu_h for r in self.rules)

    @property
    def energy_bound_kwh(self) -> float:
        """Upper bound: every requested GPU-hour at ``gpu_power_w``."""
        return self.requested_gpu_h * self.gpu_power_w / 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [vars(r) for r in self.rules],
            "submissions": self.submissions,
            "groups": self.groups,
            "requested_gpu_h": self.requested_gpu_h,
            "gpu_power_w": self.gpu_power_w,
            "energy_bound_kwh": self.energy_bound_kwh,
            "matched": dict(self.matched),
            "measured_gpu_h": self.measured_gpu_h,
            "measured_energy_kwh": self.measured_energy_kwh,
            "measured_meters": self.measured_meters,
        }


def forecast(
    jobs: list[PlannedJob],
    history: dict[str, Measured] | None = None,
    gpu_power_w: float = DEFAULT_GPU_POWER_W,
) -> Forecast:
    """Cost of ``jobs`` from requested runtimes and GPUs, plus measured estimates from history."""
    if gpu_power_w <= 0:
        raise ForecastError(f"gpu_power_w must be positive, got {gpu_power_w}")
    rules: dict[str, RuleCost] = {}
    group_instances: dict[str, set[int]] = {}
    submissions = 0
    for job in jobs:
        cost = rules.setdefault(job.rule, RuleCost(job.rule, local=job.local))
        cost.jobs += 1
        cost.gpus_per_job = max(cost.gpus_per_job, job.gpus)
        if job.local:
            continue
        hours = (job.runtime_min or 0.0) / 60
        cost.requested_h += hours
        cost.requested_gpu_h += hours * job.gpus
        if job.group is None:
            submissions += 1
        else:
            group_instances.setdefault(job.group, set()).add(job.group_instance or 0)
    submissions += sum(len(v) for v in group_instances.values())
    result = Forecast(
        rules=list(rules.values()),
        submissions=submissions,
        groups={g: len(v) for g, v in group_instances.items()},
        gpu_power_w=gpu_power_w,
    )
    if history:
        _add_measured(result, jobs, history)
    return result


def _add_measured(result: Forecast, jobs: list[PlannedJob], history: dict[str, Measured]) -> None:
    gpu_h = energy_kwh = 0.0
    meters: set[str] = set()
    for job in jobs:
        if job.rule != BENCH_RULE or job.config_id is None:
            continue
        found = most_similar(job.config_id, history)
        if found is None:
            result.matched["requested"] += 1
            gpu_h += (job.runtime_min or 0.0) / 60 * job.gpus
            continue
        measured, how = found
        result.matched[how] += 1
        hours = measured.seconds / 3600
        gpu_h += hours * job.gpus
        if measured.avg_power_w is not None:
            energy_kwh += measured.avg_power_w * hours / 1000
            meters.add(measured.meter or "unknown")
    result.measured_gpu_h = gpu_h
    result.measured_energy_kwh = energy_kwh
    result.measured_meters = sorted(meters)


def render(fc: Forecast) -> str:
    """The forecast as a short human-readable table."""
    width = max([18, *(len(r.rule) for r in fc.rules)])  # one column of rule names
    head = f"{'jobs':>5s} {'where':>6s} {'GPUs/job':>8s} {'req. h':>8s} {'GPU-h':>8s}"
    lines = [f"{'rule':{width}s} {head}"]
    for r in fc.rules:
        where = "local" if r.local else "sched"
        lines.append(
            f"{r.rule:{width}s} {r.jobs:5d} {where:>6s} {r.gpus_per_job:8d} "
            f"{r.requested_h:8.2f} {r.requested_gpu_h:8.2f}"
        )
    jobs = sum(r.jobs for r in fc.rules)
    groups = ", ".join(f"group {g}: {n}" for g, n in fc.groups.items())
    lines += [
        "",
        f"jobs: {jobs}; scheduler submissions: {fc.submissions}"
        + (f" ({groups})" if groups else ""),
        f"requested: {fc.requested_gpu_h:.2f} GPU-h; energy at most "
        f"{fc.energy_bound_kwh:.2f} kWh ({fc.gpu_power_w:g} W per GPU for every requested hour)",
    ]
    if fc.measured_gpu_h is not None:
        how = ", ".join(f"{n} {k}" for k, n in sorted(fc.matched.items()))
        lines.append(
            f"from measured durations of similar configurations ({how}): "
            f"{fc.measured_gpu_h:.3f} GPU-h; expected energy of the matched jobs "
            f"{fc.measured_energy_kwh * 1000:.3g} Wh at their measured average power "
            f"(meter: {', '.join(fc.measured_meters) or 'none'})"
        )
        if "estimate" in fc.measured_meters:
            lines.append("  (the 'estimate' meter models CPU power; it is not a measurement)")
    return "\n".join(lines)


def snakemake_dry_run(snakemake_args: list[str]) -> str:
    """The output of ``snakemake --dry-run SNAKEMAKE_ARGS`` run here (a ``--`` is dropped); a
    failed run raises JoulebenchError with the last line snakemake printed."""
    import subprocess
    import sys

    extra = [a for a in snakemake_args if a != "--"]
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        lines = [line.strip() for line in run.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit {run.returncode}"
        raise JoulebenchError(f"snakemake --dry-run failed: {why}")
    return run.stdout
