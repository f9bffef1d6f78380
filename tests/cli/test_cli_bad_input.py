"""Every subcommand answers a bad path, a malformed file or an incomplete spec with one line
naming the argument, exit status 2, and writes nothing."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from conftest import make_record
from joulebench.cli import build_parser, main


@dataclass(frozen=True)
class Files:
    """Inputs a careless user might pass, made once per test; outputs go under ``out``."""

    model: Path
    missing: Path
    folder: Path
    not_json: Path
    empty_object: Path
    bench_record: Path
    text: Path
    thin_parquet: Path
    bad_yaml: Path
    out: Path


@pytest.fixture
def files(tmp_path: Path, tiny_model: Path) -> Files:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "folder").mkdir()
    (inputs / "not.json").write_text('{"config": ')
    (inputs / "empty.json").write_text("{}")
    (inputs / "record.json").write_text(json.dumps(make_record("fp32", 1, [])))
    (inputs / "table.txt").write_text("config_id,phase\nm,full\n")
    pl.DataFrame({"x": [1]}).write_parquet(inputs / "thin.parquet")
    (inputs / "bad.yaml").write_text("study: s\nprecisions: [fp32,\n")
    return Files(
        model=tiny_model,
        missing=inputs / "missing.json",
        folder=inputs / "folder",
        not_json=inputs / "not.json",
        empty_object=inputs / "empty.json",
        bench_record=inputs / "record.json",
        text=inputs / "table.txt",
        thin_parquet=inputs / "thin.parquet",
        bad_yaml=inputs / "bad.yaml",
        out=tmp_path / "out",
    )


def bench(f: Files, *args: object) -> list[str]:
    return ["bench", "--model-dir", str(f.model), "--out", str(f.out / "r.json"), *map(str, args)]


def aggregate(*records: object) -> Callable[[Files], list[str]]:
    def argv(f: Files) -> list[str]:
        outs = ("--measurements", "--summary", "--summary-csv", "--long")
        named = [str(getattr(f, r)) if isinstance(r, str) else str(r) for r in records]
        return ["aggregate", *named, *[x for o in outs for x in (o, str(f.out / o[2:]))]]

    return argv


def findings(f: Files, summary: Path, measurements: Path) -> list[str]:
    return [
        "findings",
        *("--summary", str(summary), "--measurements", str(measurements)),
        *("--out-md", str(f.out / "f.md"), "--out-html", str(f.out / "f.html")),
    ]


SPEC = {
    "study": "s",
    "model": "tiny",
    "engine": "transformers",
    "precision": "fp32",
    "device": "cpu",
    "batch_size": 1,
    "input_len": 8,
    "output_len": 4,
}

#: (subcommand, argv from the files, the argument the line must name, what it must say)
CASES: list[tuple[str, Callable[[Files], list[str]], str, str]] = [
    (
        "bench",
        lambda f: [*bench(f, "--precision", "fp32"), "--model-dir", str(f.missing)],
        "--model-dir:",
        "does not exist",
    ),
    ("bench", lambda f: bench(f, "--spec-json", "{}"), "--spec-json:", "missing 'study'"),
    ("bench", lambda f: bench(f, "--spec-json", "{oops"), "--spec-json:", "not valid JSON"),
    (
        "bench",
        lambda f: bench(f, "--spec-json", json.dumps(SPEC | {"batch_size": 0})),
        "--spec-json key 'batch_size':",
        "minimum of 1",
    ),
    (
        "bench",
        lambda f: bench(f, "--spec-json", json.dumps(SPEC | {"colour": "red"})),
        "--spec-json:",
        "unknown key 'colour'",
    ),
    (
        "bench",
        lambda f: bench(f, "--spec-json", json.dumps(SPEC | {"precision": "fp9"})),
        "--spec-json key 'precision':",
        "unknown precision 'fp9'",
    ),
    (
        "bench",
        lambda f: bench(f, "--precision", "fp32", "--input-len", "0"),
        "--input-len:",
        "minimum of 1",
    ),
    (
        "bench",
        lambda f: bench(f, "--precision", "fp32", "--sample-hz", "-1"),
        "--sample-hz:",
        "minimum of 0",
    ),
    (
        "bench",
        lambda f: bench(f, "--precision", "fp32", "--variant", f.missing),
        "--variant:",
        "does not exist",
    ),
    (
        "bench",
        lambda f: bench(f, "--precision", "fp32", "--variant", f.not_json),
        "--variant:",
        "not a JSON file",
    ),
    (
        "prepare-model",
        lambda f: ["prepare-model", "--spec-json", "{}", "--out", str(f.out / "m")],
        "--spec-json (models[].name):",
        "is required but missing",
    ),
    (
        "prepare-model",
        lambda f: [
            "prepare-model",
            "--spec-json",
            json.dumps({"name": "m", "source": "local", "path": str(f.folder)}),
            "--out",
            str(f.out / "m"),
        ],
        "--spec-json (models[].path):",
        "no config.json",
    ),
    (
        "variant",
        lambda f: (
            [
                "variant",
                "--model-dir",
                str(f.missing),
                "--precision",
                "fp32",
                "--out",
                str(f.out / "v.json"),
            ]
        ),
        "--model-dir:",
        "does not exist",
    ),
    (
        "variant",
        lambda f: (
            [
                "variant",
                "--model-dir",
                str(f.model),
                "--precision",
                "fp32",
                "--quantization-json",
                '{"group_size": "big"}',
                "--out",
                str(f.out / "v.json"),
            ]
        ),
        "--quantization-json:",
        "group_size",
    ),
    (
        "quantize",
        lambda f: (
            [
                "quantize",
                "--model-dir",
                str(f.text),
                "--precision",
                "ct-w8a8",
                "--out-dir",
                str(f.out / "c"),
                "--manifest",
                str(f.out / "v.json"),
            ]
        ),
        "--model-dir:",
        "is a file, not a model directory",
    ),
    ("aggregate", aggregate("missing"), "records:", "does not exist"),
    ("aggregate", aggregate("bench_record", "not_json"), "records:", "not a JSON file"),
    ("aggregate", aggregate("folder"), "records:", "is a directory"),
    ("aggregate", aggregate("empty_object"), "records:", "not a benchmark record"),
    (
        "aggregate",
        lambda f: [*aggregate("bench_record")(f), "--analysis-json", "[1]"],
        "--analysis-json:",
        "must be a JSON object",
    ),
    (
        "aggregate",
        lambda f: [*aggregate("bench_record")(f), "--analysis-json", '{"confidence": 2}'],
        "--analysis-json:",
        "confidence",
    ),
    ("findings", lambda f: findings(f, f.missing, f.missing), "--summary:", "does not exist"),
    ("findings", lambda f: findings(f, f.text, f.text), "--summary:", "not a parquet table"),
    (
        "plot",
        lambda f: (
            [
                "plot",
                "time_energy_pareto",
                "--summary",
                str(f.thin_parquet),
                "--out-stem",
                str(f.out / "p"),
            ]
        ),
        "--summary:",
        "lacks the columns config_id",
    ),
    (
        "plot-power",
        lambda f: (
            [
                "plot-power",
                str(f.not_json),
                "--trace",
                str(f.thin_parquet),
                "--out-stem",
                str(f.out / "p"),
            ]
        ),
        "record:",
        "not a JSON file",
    ),
    (
        "compare",
        lambda f: ["compare", str(f.out / "missing"), str(f.out), "--out-dir", str(f.out / "c")],
        "results:",
        "has no tables/summary.parquet",
    ),
    (
        "plot-serving-power",
        lambda f: (
            [
                "plot-serving-power",
                str(f.bench_record),
                "--trace",
                str(f.thin_parquet),
                "--table",
                str(f.thin_parquet),
                "--out-stem",
                str(f.out / "p"),
            ]
        ),
        "record:",
        "is not a serving record",
    ),
    (
        "serve",
        lambda f: (
            ["serve", "--model-dir", str(f.model), "--spec-json", "{}", "--out-dir", str(f.out)]
        ),
        "--spec-json:",
        "missing 'study', 'model'",
    ),
    (
        "aggregate-serving",
        lambda f: (
            [
                "aggregate-serving",
                str(f.bench_record),
                "--table",
                str(f.out / "t.parquet"),
                "--table-csv",
                str(f.out / "t.csv"),
            ]
        ),
        "records:",
        "not a serving record",
    ),
    (
        "plot-serving",
        lambda f: (
            [
                "plot-serving",
                "serving_energy_latency",
                "--table",
                str(f.missing),
                "--out-stem",
                str(f.out / "p"),
            ]
        ),
        "--table:",
        "does not exist",
    ),
    ("validate", lambda f: ["validate", str(f.bad_yaml)], "configfile", "not valid YAML"),
    ("validate", lambda f: ["validate", str(f.missing)], "configfile", "does not exist"),
    ("validate", lambda f: ["validate", str(f.folder)], "configfile", "is a directory"),
    (
        "forecast",
        lambda f: ["forecast", "--dry-run", str(f.missing)],
        "--dry-run:",
        "does not exist",
    ),
]


@pytest.mark.parametrize(
    ("command", "argv", "argument", "fragment"),
    CASES,
    ids=[f"{c[0]}-{c[2].rstrip(':')}-{c[3]}" for c in CASES],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    command: str,
    argv: Callable[[Files], list[str]],
    argument: str,
    fragment: str,
    files: Files,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with caplog.at_level(logging.INFO, logger="joulebench"):
        assert main(argv(files)) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    message = errors[0].getMessage()
    assert "\n" not in message
    assert argument in message and fragment in message, message
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_every_subcommand_that_reads_input_is_in_the_table() -> None:
    usage = build_parser().format_usage()  # "usage: joulebench ... {bench,prepare-model,...}"
    found = re.search(r"\{([a-z,-]+)\}", usage)
    assert found, usage
    takes_no_input = {"presets"}
    # provenance's bad-input answers are tested with it (tests/provenance/test_provenance.py)
    elsewhere = {"provenance"}
    assert {c[0] for c in CASES} == set(found.group(1).split(",")) - takes_no_input - elsewhere


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{bad_yaml}"],
        ["bench", "--model-dir", "{model}", "--out", "{out}/r.json", "--spec-json", "{{}}"],
    ],
)
def test_the_user_sees_one_line_on_stderr(argv: list[str], files: Files, tmp_path: Path) -> None:
    """As a user runs it: stderr is the one log line, no traceback."""
    args = [a.format(bad_yaml=files.bad_yaml, model=files.model, out=files.out) for a in argv]
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "ERROR" in run.stderr and "Traceback" not in run.stderr
    assert not files.out.exists()
