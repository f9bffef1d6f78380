"""Shared fixtures: a tiny locally made model, a fake NVML module (fakehw), hand-made records."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakehw import FakeNvml

REPO = Path(__file__).resolve().parent.parent

#: A model small enough to build in a second: two layers of the tiny-llama preset.
TINY_OVERRIDES = {
    "num_hidden_layers": 2,
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
}


#: A powercap root with no RAPL under it (the path does not exist; see ``no_host_powercap``).
#: Every test config that lets ``meter: auto`` pick the CPU's meter points
#: ``measurement.powercap_root`` here, so the estimate is what auto picks on every host, a root CI
#: job on an Intel machine with a readable /sys/class/powercap included.
NO_POWERCAP = str(REPO / "tests" / "no-powercap-here")


@pytest.fixture(scope="session", autouse=True)
def no_host_powercap() -> str:
    """Make sure ``NO_POWERCAP`` really holds no RAPL tree (a test relying on it could not tell)."""
    from joulebench.energy import rapl

    assert not Path(NO_POWERCAP).exists() and not rapl.readable(NO_POWERCAP)
    return NO_POWERCAP


#: The `models:` entry of the small studies the workflow tests run.
TINY_MODEL = {
    "name": "tiny",
    "source": "synthetic",
    "architecture": "tiny-llama",
    "overrides": TINY_OVERRIDES,
    "tokenizer_vocab_size": 512,
}


#: The client commands of Debian's slurm-client (what the SLURM executor plugin looks for).
SLURM_TOOLS = frozenset(
    [
        "sacct",
        "sacctmgr",
        "salloc",
        "sattach",
        "sbatch",
        "sbcast",
        "scancel",
        "scontrol",
        "scrontab",
        "sdiag",
        "sinfo",
        "sprio",
        "squeue",
        "sreport",
        "srun",
        "sshare",
        "sstat",
        "strigger",
    ]
)


def path_without_slurm(path: str, shadow_root: Path) -> str:
    """``path`` with SLURM's client commands out of reach, every other command still found.

    A directory that holds one of :data:`SLURM_TOOLS` is replaced by a directory of links to
    everything else in it. Snakemake imports every installed executor plugin at start; the SLURM
    plugin then runs `scontrol show config`, which waits ~10 s where slurm-client is installed
    and configured but no controller answers. Without `sinfo` on PATH it asks nothing.
    """
    parts = []
    for i, entry in enumerate(path.split(os.pathsep)):
        folder = Path(entry)
        if not entry or not any((folder / tool).exists() for tool in SLURM_TOOLS):
            parts.append(entry)
            continue
        shadow = shadow_root / str(i)
        shadow.mkdir(parents=True)
        for item in folder.iterdir():
            if item.name not in SLURM_TOOLS:
                (shadow / item.name).symlink_to(item)
        parts.append(str(shadow))
    return os.pathsep.join(parts)


#: PATH as the suite was started with (before :func:`slurm_out_of_reach`).
PATH_BEFORE = os.environ["PATH"]


@pytest.fixture(scope="session", autouse=True)
def slurm_out_of_reach(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Every snakemake the tests start runs as fast on a host with a stopped SLURM as without.

    The SLURM tier (`-m slurm`) keeps the real PATH: it submits jobs.
    """
    if any(item.get_closest_marker("slurm") for item in request.session.items):
        yield
        return
    before = os.environ["PATH"]
    os.environ["PATH"] = path_without_slurm(before, tmp_path_factory.mktemp("path"))
    try:
        yield
    finally:
        os.environ["PATH"] = before


def snakemake_argv(workdir: Path, *args: str) -> list[str]:
    """The command that runs this repository's workflow in ``workdir`` (what a user types)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]


def bench_fp32_cpu(model_dir: Path) -> list[str]:
    """The start of a `joulebench bench` command line: fp32 on the CPU with ``model_dir``.

    The meter is pinned to the estimate: the CLI has no powercap root to point elsewhere, and
    ``auto`` would pick RAPL on a host whose /sys/class/powercap is readable.
    """
    return [
        "bench",
        "--model-dir",
        str(model_dir),
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--meter",
        "estimate",
    ]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session (and the workflows it runs), never the user's own."""
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["JOULEBENCH_CACHE_DIR"] = str(path)
    return path


def capture_generate(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every tensor a transformers engine's ``model.generate`` returns, kept for the test to
    check by itself (not through the engine's own count)."""
    outputs: list[Any] = []
    real = engine.model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        outputs.append(real(*args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(engine.model, "generate", generate)
    return outputs


def assert_exact_new_tokens(out: Any, prompt_ids: Any, asked: int, tokenizer: Any) -> None:
    """``out`` is the prompts followed by ``asked`` real tokens each: none stopped at an EOS and
    was padded to the batch's width."""
    n_prompts, prompt_len = tuple(prompt_ids.shape)
    assert tuple(out.shape) == (n_prompts, prompt_len + asked)
    assert (out[:, :prompt_len] == prompt_ids).all()
    assert tokenizer.eos_token_id not in set(out[:, prompt_len:].flatten().tolist())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from joulebench.models.synthetic import synthesize

    out = tmp_path_factory.mktemp("models") / "tiny"
    return synthesize(out, "tiny-llama", TINY_OVERRIDES, seed=0, tokenizer_vocab_size=512)


@pytest.fixture
def fake_nvml() -> FakeNvml:
    return FakeNvml(["GPU-aaaa-0000", "GPU-bbbb-1111"], [1_000_000, 5_000_000])


def make_record(
    precision: str, batch: int, reps: list[dict[str, float]], source: str = "estimate"
) -> dict[str, Any]:
    """A minimal result record; ``reps`` hold prefill/full energy and time per repetition."""
    runs = []
    n_in, n_out = 16, 8
    for i, r in enumerate(reps):
        for phase, e, t, tok, n_i, n_o in (
            ("prefill", r["pe"], r["pt"], batch * n_in, batch * n_in, batch),
            ("full", r["fe"], r["ft"], batch * n_out, batch * n_in, batch * n_out),
            (
                "decode",
                r["fe"] - r["pe"],
                r["ft"] - r["pt"],
                batch * (n_out - 1),
                0,
                batch * (n_out - 1),
            ),
        ):
            runs.append(
                {
                    "rep": i,
                    "phase": phase,
                    "method": "x",
                    "time_s": t,
                    "energy_j": e,
                    "tokens": tok,
                    "input_tokens": n_i,
                    "output_tokens": n_o,
                    "window_repeats": 1,
                }
            )
    cfg = {
        "study": "s",
        "model": "m",
        "engine": "transformers",
        "precision": precision,
        "device": "cpu",
        "batch_size": batch,
        "input_len": n_in,
        "output_len": n_out,
    }
    return {
        "config": cfg,
        "config_id": f"m/{precision}/transformers/bs{batch}_in{n_in}_out{n_out}",
        "config_hash": f"h{precision}{batch}",
        "engine": {"device": "cpu"},
        "meter": {"source": source},
        "memory": {"bytes": 1000, "kind": "process_peak_rss"},
        "runs": runs,
        "provenance": {
            "host": {"hostname": "h"},
            "torch": {},
            "joulebench_version": "0",
            "git": {"commit": "abc"},
            "packages": {"torch": "2"},
        },
    }
