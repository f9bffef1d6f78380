"""provenance: code hashes, GPU and SLURM facts, and the readable audit of a record."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, make_record
from fakehw import FakeNvml
from joulebench.core.errors import JoulebenchError
from joulebench.provenance import codehash
from joulebench.provenance import record as provenance
from joulebench.results import audit

STEPS = sorted(codehash.STEPS)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package to edit; the parse cache goes to tmp_path too."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dst = tmp_path / "joulebench"
    shutil.copytree(
        REPO / "workflow" / "joulebench", dst, ignore=shutil.ignore_patterns("__pycache__")
    )
    return dst


def hashes(package: Path) -> dict[str, str]:
    return {step: codehash.source_hash(step, package) for step in STEPS}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {step for step in before if before[step] != after[step]}


def edit_code(path: Path) -> None:
    """A code edit: one more module-level statement."""
    path.write_text(path.read_text() + "\n_EDITED_BY_A_TEST = 1\n")


def edit_function(path: Path, name: str) -> None:
    """A code edit inside top-level function ``name`` only: a statement before its body."""
    lines = path.read_text().splitlines(keepends=True)
    node = next(
        n
        for n in ast.parse("".join(lines)).body
        if isinstance(n, ast.FunctionDef) and n.name == name
    )
    first = node.body[0]
    lines.insert(first.lineno - 1, " " * first.col_offset + "_edited_by_a_test = 1\n")
    path.write_text("".join(lines))


def handler(step: str) -> tuple[Path, str]:
    """The file and function of ``step``'s first CLI handler, as its entry point names them."""
    module, _, function = next(e for e in codehash.STEPS[step] if ":" in e).partition(":")
    return entry_file(REPO / "workflow" / "joulebench", module), function


def entry_file(package: Path, module: str) -> Path:
    base = package.joinpath(*module.split(".")[1:])
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


def test_every_entry_point_exists() -> None:
    """Each step's entry modules and CLI handlers are in the package (the table names modules,
    so a module that moves must be renamed there)."""
    package = REPO / "workflow" / "joulebench"
    for entry in {e for entries in codehash.STEPS.values() for e in entries} | set(codehash.COMMON):
        module, _, function = entry.partition(":")
        path = entry_file(package, module)
        assert path.is_file(), f"entry {entry}: no module {module}"
        if function:
            tree = ast.parse(path.read_text())
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert function in names, f"entry {entry}: {path.name} defines no {function}"


def test_the_rules_steps_are_the_tables_steps() -> None:
    """Every ``CODE["step"]`` a rule passes is a step with entry points, and every step is used."""
    used = set()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'CODE\["([\w-]+)"\]', rules.read_text()))
    assert used == set(codehash.STEPS)


def test_unknown_step_and_missing_module_are_named(package: Path) -> None:
    with pytest.raises(JoulebenchError, match="no workflow step 'nope'; allowed: aggregate, "):
        codehash.source_hash("nope", package)
    (package / "harness" / "memory.py").unlink()
    with pytest.raises(
        codehash.CodeHashError,
        match=r"module 'joulebench\.harness\.memory' \(imported by joulebench\.harness\.bench\)",
    ):
        codehash.source_hash("bench", package)


#: A code edit to a module and the steps that import it, read off the imports by hand: the
#: meters run in benchmarks and serving sessions only; the engines in benchmarks only; arrival
#: processes in serving sessions only; plots in the figures and the findings report (which
#: embeds them); nothing on a step's path imports the comparison or the forecast.
CODE_EDITS: list[tuple[str, set[str]]] = [
    ("energy/rapl.py", {"bench", "serve"}),
    ("energy/choice.py", {"bench", "serve"}),
    ("energy/attribution.py", {"serve"}),
    ("harness/engines/hf_transformers.py", {"bench"}),
    ("harness/memory.py", {"bench"}),
    ("harness/engines/base.py", {"bench"}),  # the CLI reads engine names for --help only
    ("serving/session.py", {"serve"}),  # test_workflow's study serves nothing; this row does
    ("workload/arrivals.py", {"serve"}),
    ("models/quantize.py", {"quantize"}),
    ("results/plots.py", {"plot", "plot-serving", "findings"}),
    ("results/findings.py", {"findings"}),
    ("results/audit.py", {"audit"}),
    ("results/compare.py", set()),
    ("results/forecast.py", set()),
    ("core/errors.py", set(STEPS)),  # the CLI imports it to report errors
]


@pytest.mark.parametrize(("relpath", "steps"), CODE_EDITS, ids=[e[0] for e in CODE_EDITS])
def test_a_code_edit_changes_the_steps_that_import_it(
    package: Path, relpath: str, steps: set[str]
) -> None:
    before = hashes(package)
    edit_code(package / relpath)
    assert changed(before, hashes(package)) == steps


def test_a_cli_handler_edit_changes_its_step_only(package: Path) -> None:
    """The CLI counts function by function: a handler's edit is its step's, ``main``'s every
    step's, and an edit to a command no step runs (``forecast``) no step's."""
    before = hashes(package)
    path, function = handler("plot")
    copy = package / path.relative_to(REPO / "workflow" / "joulebench")
    edit_function(copy, function)
    assert changed(before, after := hashes(package)) == {"plot"}
    edit_function(copy, "cmd_forecast")
    assert hashes(package) == after
    edit_function(package / "cli" / "__init__.py", "main")
    assert changed(after, hashes(package)) == set(STEPS)


def test_a_function_edit_changes_the_steps_that_run_the_function(package: Path) -> None:
    """The precision registry is loaded by every step that checks a config (the study imports
    it), by the model and benchmark steps, and by serving (a server's dtype is the registry's),
    so a module-level edit there changes those; the figures, the serving table and the audit
    never load it (the CLI reads its names only for help). Only `variant` and `quantize` call
    ``variant_manifest``."""
    before = hashes(package)
    edit_function(package / "models" / "variants.py", "variant_manifest")
    assert changed(before, after := hashes(package)) == {"variant", "quantize"}
    edit_code(package / "models" / "precisions.py")
    loads_the_registry = {
        "prepare-model",
        "variant",
        "quantize",
        "bench",
        "aggregate",
        "findings",
        "serve",
    }
    assert changed(after, hashes(package)) == loads_the_registry


def test_comments_docstrings_and_blank_lines_change_nothing(package: Path) -> None:
    before = hashes(package)
    for relpath in ("energy/rapl.py", "harness/bench.py", "results/plots.py", "cli/__init__.py"):
        path = package / relpath
        text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree, clean=False)
        assert doc, relpath
        text = text.replace(doc, doc + " Edited.", 1)
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        fdoc = next(d for f in functions if (d := ast.get_docstring(f, clean=False)))
        text = text.replace(fdoc, "An edited docstring.", 1)
        path.write_text(text)
        # comments and blank lines before every top-level statement and inside a function
        tree = ast.parse(text)
        lines = text.splitlines(keepends=True)
        inner = functions[0].body[-1]
        places = [(s.lineno, 0) for s in tree.body] + [(inner.lineno, inner.col_offset)]
        for line, indent in sorted(places, reverse=True):
            lines.insert(line - 1, f"\n{' ' * indent}# a comment\n")
        path.write_text("".join(lines))
        assert "Edited." in (ast.get_docstring(ast.parse(path.read_text())) or "")
    assert hashes(package) == before


def dynamic_imports(source: str) -> list[str]:
    """``import_module("joulebench...")`` / ``__import__("joulebench...")`` calls in ``source``."""
    return [
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None))
        in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith((".", "joulebench.", "joulebench"))
    ]


def test_no_module_is_imported_by_name() -> None:
    """The walk follows import statements only: a module imported from a string would change
    no hash when edited, so the package has none (and the scan does see one)."""
    planted = 'importlib.import_module("joulebench.x")\nimport_module(".y", __package__)\n'
    assert dynamic_imports(planted) == ["joulebench.x", ".y"]
    found = {
        path.relative_to(REPO).as_posix(): names
        for path in (REPO / "workflow" / "joulebench").rglob("*.py")
        if (names := dynamic_imports(path.read_text()))
    }
    assert found == {}


def test_a_string_in_code_is_code(package: Path) -> None:
    """Dropping docstrings drops bare strings only: an edited string value changes the hash."""
    rapl = package / "energy" / "rapl.py"
    rapl.write_text(rapl.read_text() + '\nNOTE = "a"\n')
    before = hashes(package)
    rapl.write_text(rapl.read_text().replace('NOTE = "a"', 'NOTE = "b"'))
    assert changed(before, hashes(package)) == {"bench", "serve"}


def test_a_module_nothing_imports_changes_nothing(package: Path) -> None:
    before = hashes(package)
    (package / "results" / "unused.py").write_text('"""Nobody imports this."""\nX = 1\n')
    (package / "energy" / "spare.py").write_text("from joulebench.energy import rapl\n")
    assert hashes(package) == before


@pytest.mark.parametrize(
    ("where", "statement"),
    [
        ("top", "from joulebench.harness import extra\n"),
        ("function", "from .extra import EXTRA\n"),
    ],
)
def test_a_new_import_in_an_entry_module_pulls_the_module_in(
    package: Path, where: str, statement: str
) -> None:
    """A new module counts for a step once the step's code imports it, at the top of a module
    or inside one of its functions (relative imports too), and not before."""
    extra = package / "harness" / "extra.py"
    extra.write_text("EXTRA = 1\n")
    before = hashes(package)
    edit_code(extra)
    assert hashes(package) == before
    bench = package / "harness" / "bench.py"
    if where == "top":
        bench.write_text(statement + bench.read_text())
    else:
        tree = ast.parse(bench.read_text())
        body = next(n for n in tree.body if isinstance(n, ast.FunctionDef)).body[-1]
        lines = bench.read_text().splitlines(keepends=True)
        lines.insert(body.lineno - 1, " " * body.col_offset + statement)
        bench.write_text("".join(lines))
    assert "harness/extra.py" in codehash.step_modules("bench", package)
    middle = hashes(package)
    edit_code(extra)
    assert changed(middle, hashes(package)) == {"bench"}


@pytest.mark.parametrize(
    ("statement", "call"),
    [
        ("from joulebench.workload import helper\n", "helper()"),
        ("from joulebench import workload\n", "workload.helper()"),
        ("from .. import workload\n", "workload.helper()"),
        ("import joulebench.workload as wl\n", "wl.helper()"),
        ("import joulebench.workload.hidden as hd\n", "hd.helper()"),
    ],
)
def test_a_function_reached_through_a_package_reexport_counts(
    package: Path, statement: str, call: str
) -> None:
    """A function defined in ``workload/hidden.py`` and re-exported by ``workload/__init__``
    counts for the step that calls it (by any import form), and for no step before the call."""
    (package / "workload" / "hidden.py").write_text("def helper():\n    return 1\n")
    init = package / "workload" / "__init__.py"
    init.write_text(init.read_text() + "\nfrom joulebench.workload.hidden import helper\n")
    hidden_edit = "def helper():\n    x = 2\n    return x\n"
    before = hashes(package)
    (package / "workload" / "hidden.py").write_text(hidden_edit)
    assert hashes(package) == before, "no step calls helper() yet"
    bench = package / "harness" / "bench.py"
    bench.write_text(statement + bench.read_text() + f"\n\ndef probe():\n    return {call}\n")
    middle = hashes(package)
    (package / "workload" / "hidden.py").write_text("def helper():\n    return 3\n")
    assert changed(middle, hashes(package)) == {"bench"}


def test_the_walk_covers_what_python_imports(tmp_path: Path) -> None:
    """Independent of the walk: the joulebench modules Python itself has loaded after importing
    a step's entry modules are all among the modules the step's hash counts."""
    for step in STEPS:
        modules = sorted({e.partition(":")[0] for e in (*codehash.COMMON, *codehash.STEPS[step])})
        modules.remove("joulebench.__main__")  # it runs main(); its one import is the CLI
        script = (
            "import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] == 'joulebench')))"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
        )
        loaded = {
            entry_file(REPO / "workflow" / "joulebench", name)
            .relative_to(REPO / "workflow" / "joulebench")
            .as_posix()
            for name in json.loads(out.stdout)
            if entry_file(REPO / "workflow" / "joulebench", name).is_file()
        }
        assert loaded <= set(codehash.step_modules(step)), (
            step,
            loaded - set(codehash.step_modules(step)),
        )


def fresh_hashes(package: Path) -> dict[str, str]:
    """``source_hashes`` in a fresh process (no parsed modules in memory)."""
    script = (
        "import json, sys; from pathlib import Path; from joulebench.provenance import codehash;"
        "print(json.dumps(codehash.source_hashes(Path(sys.argv[1]))))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    out = subprocess.run(
        [sys.executable, "-c", script, str(package)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout)


def test_a_corrupt_cache_entry_is_read_afresh(package: Path, tmp_path: Path) -> None:
    """The on-disk parse cache is only a cache: garbage in it is parsed afresh."""
    before = fresh_hashes(package)
    assert before == hashes(package)
    entries = list((tmp_path / "cache").rglob("*.json"))
    assert len(entries) > 20
    for entry in entries:
        entry.write_text("{not json")
    assert fresh_hashes(package) == before


def test_gpu_info_describes_visible_gpus(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    info = provenance.gpu_info(fake_nvml)
    assert info["driver"] == "999.1"
    assert info["devices"] == [
        {"uuid": "GPU-bbbb-1111", "name": "Fake H100", "power_limit_w": 700.0}
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert "NVML sees 2" in provenance.gpu_info(fake_nvml)["error"]


def test_slurm_info_reads_the_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables are the ones SLURM sets in a job (sbatch(1), "OUTPUT ENVIRONMENT
    VARIABLES"), spelled here independently of the product's table."""
    for var in [v for v in os.environ if v.startswith(("SLURM_", "SLURMD_"))]:
        monkeypatch.delenv(var)  # also when the suite itself runs inside a SLURM job
    assert provenance.slurm_info() is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    monkeypatch.setenv("SLURMD_NODENAME", "n7")
    info = provenance.slurm_info()
    assert info is not None
    assert (info["job_id"], info["partition"], info["node"]) == ("42", "gpu", "n7")


def test_provenance_command_prints_a_table_or_json(tmp_path: Path) -> None:
    record = make_record("bf16", 4, [{"pe": 1.0, "pt": 0.1, "fe": 3.0, "ft": 0.5}])
    record["provenance"] |= {
        "slurm": {"job_id": "77", "partition": "gpu", "node": "n1"},
        "gpu": {
            "driver": "550.1",
            "devices": [{"uuid": "GPU-x", "name": "H100", "power_limit_w": 700.0}],
        },
        "code_hash": "abc123",
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "joulebench", "provenance", str(path), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    table = cli()
    assert "[slurm]" in table and "job id" in table and "77" in table
    assert "GPU 0" in table and "H100 GPU-x power limit 700.0 W" in table
    assert "driver" in table and "550.1" in table
    assert re.search(r"^  benchmark code hash +abc123$", table, re.MULTILINE), table
    assert "batch_size" in table
    raw = json.loads(cli("--json"))
    assert raw["provenance"]["slurm"]["job_id"] == "77"


def study_record(batch: int, **changes: Any) -> dict[str, Any]:
    """A record of a clean, measured GPU study; ``changes`` replace provenance/meter parts."""
    record = make_record("bf16", batch, [{"pe": 1.0, "pt": 0.1, "fe": 3.0, "ft": 0.5}], "nvml")
    record["provenance"] |= {
        "code_hash": "c0de",
        "git": {"commit": "abc", "dirty": False},
        "packages": {"torch": "2.13.0", "transformers": "5.1.0"},
        "gpu": {
            "driver": "550.1",
            "devices": [{"uuid": f"GPU-{batch}", "name": "H100", "power_limit_w": 700.0}],
        },
    }
    for key, value in changes.items():
        if key == "meter":
            record["meter"] = {"source": value}
        else:
            record["provenance"][key] = value
    return record


H100 = {"driver": "550.1", "devices": [{"uuid": "GPU-9", "name": "H100", "power_limit_w": 700.0}]}


@pytest.mark.parametrize(
    ("change", "kinds", "detail"),
    [
        ({"packages": {"torch": "2.12.0", "transformers": "5.1.0"}}, {"mixed-libraries"}, "torch"),
        ({"gpu": H100 | {"driver": "560.3"}}, {"mixed-drivers"}, "560.3 (1)"),
        (
            {"gpu": {"driver": "550.1", "devices": [{"name": "A100", "power_limit_w": 700.0}]}},
            {"mixed-gpus"},
            "A100 (1), H100 (2)",
        ),
        (
            {"gpu": {"driver": "550.1", "devices": [{"name": "H100", "power_limit_w": 500.0}]}},
            {"mixed-power-limits"},
            "500.0 (1), 700.0 (2)",
        ),
        ({"code_hash": "beef"}, {"code-hash", "mixed-code-hashes"}, "1 of 3 records"),
        ({"git": {"commit": "abc", "dirty": True}}, {"dirty"}, "1 of 3 records (commit abc)"),
        ({"meter": "estimate"}, {"mixed-energy"}, "estimate (1), nvml (2)"),
    ],
)
def test_audit_flags_what_makes_rows_incomparable(
    change: dict[str, Any], kinds: set[str], detail: str
) -> None:
    clean = [(f"r{b}.json", study_record(b)) for b in (1, 2)]
    assert audit.audit(clean, "c0de").flags == []
    result = audit.audit([*clean, ("odd.json", study_record(4, **change))], "c0de")
    assert {f.kind for f in result.flags} == kinds
    assert any(detail in f.text() for f in result.flags), [f.text() for f in result.flags]
    assert result.verdict.startswith("Provenance audit: NOT comparable — 3 records")


def test_audit_of_a_clean_study_and_its_rows() -> None:
    result = audit.audit([(f"r{b}.json", study_record(b)) for b in (1, 2)], "c0de")
    assert result.verdict == (
        "Provenance audit: comparable — 2 records, 1 host, energy: nvml; nothing flagged."
    )
    first = result.rows.row(0, named=True)
    assert (first["gpu"], first["driver"], first["power_limit_w"]) == ("H100", "550.1", "700.0")
    assert (first["code_hash"], first["dirty"], first["pkg:torch"]) == ("c0de", False, "2.13.0")
    # every record on an estimate is comparable too: an estimate is only flagged when mixed
    est = [(f"r{b}.json", study_record(b, meter="estimate")) for b in (1, 2)]
    assert audit.audit(est, "c0de").flags == []


def test_provenance_command_audits_a_directory(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "records").mkdir(parents=True)
    (results / "variants").mkdir()
    (results / "variants" / "bf16.json").write_text('{"precision": "bf16"}')  # not a record
    for b, code in ((1, "c0de"), (2, "c0de"), (4, "beef")):
        path = results / "records" / f"bs{b}.json"
        path.write_text(json.dumps(study_record(b, code_hash=code)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "joulebench", "provenance", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    run = cli(str(results), "--code-hash", "c0de")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["config_id", "code_hash", "git_commit"]
    assert len([ln for ln in lines if ln.startswith("m/bf16/")]) == 3
    assert "FLAG records made by different code: beef (1), c0de (2)" in run.stdout
    assert lines[-1].startswith("Provenance audit: NOT comparable — 3 records")
    strict = cli(
        str(results), "--code-hash", "c0de", "--strict", "--out-json", str(tmp_path / "a.json")
    )
    assert strict.returncode == 1
    saved = json.loads((tmp_path / "a.json").read_text())
    assert {f["text"].split(":")[0] for f in saved["flags"]} == {
        "code hash differs from the checkout's",
        "records made by different code",
    }
    clean = [str(results / "records" / f"bs{b}.json") for b in (1, 2)]
    assert cli(*clean, "--code-hash", "c0de", "--strict").returncode == 0
    missing = cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().endswith(f"{tmp_path / 'nope'}: no such file or directory")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_audit_of_records_that_lack_most_provenance() -> None:
    # records made before code hashes and GPU facts were kept: audited, not a traceback
    bare = [
        (f"r{b}.json", make_record("fp32", b, [{"pe": 1, "pt": 1, "fe": 2, "ft": 2}]))
        for b in (1, 2)
    ]
    result = audit.audit(bare, "c0de")
    assert [f.kind for f in result.flags] == ["code-hash"]
    assert "2 of 2 records differ from c0de (none)" in result.flags[0].text()
