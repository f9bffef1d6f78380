"""Building the DAG reads the study; the study must stay light: importing it, or validating and
expanding a config, loads no engine, plotting or HTTP package (issue #14, "DAG build stays
light"). Each check runs in a fresh interpreter, so nothing another test imported counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "altair", "aiohttp", "vllm", "polars")
STUDY = sorted(
    f"joulebench.study.{p.stem}"
    for p in (REPO / "workflow" / "joulebench" / "study").glob("*.py")
    if p.stem != "__init__"
)


def heavy_loaded_by(code: str) -> set[str]:
    probe = (
        f"import sys, json\n{code}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    path = os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHONPATH": path},  # this checkout's package, not an installed one
    )
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def test_the_probe_sees_a_heavy_import() -> None:
    assert heavy_loaded_by("import polars") == {"polars"}


def test_importing_the_study_loads_no_heavy_package() -> None:
    assert {"joulebench.study.config", "joulebench.study.matrix"} <= set(STUDY)
    assert heavy_loaded_by("\n".join(f"import {m}" for m in STUDY)) == set()


def test_validating_and_expanding_a_study_loads_no_engine_plotting_or_http_package() -> None:
    loaded = heavy_loaded_by(
        "from joulebench.study import config, matrix\n"
        "for name in ('config.yaml', 'gpu.yaml'):\n"
        "    assert matrix.expand(config.load(f'config/{name}'))\n"
    )
    # the meter check reads energy.choice, not the meters (their traces import polars)
    assert loaded == set()
