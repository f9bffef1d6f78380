"""`source: hub` for real: the huggingface_hub client against a Hub on 127.0.0.1 (hubserver.py).

Pinned commits, per-file hashes checked and recorded, every fault a one-line error naming the
model entry with nothing half-written, and one cache that a second study reuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubserver import LFS_SUFFIXES, LoopbackHub, Repo, git_blob_id
from joulebench.core.errors import ConfigError, ModelSourceError
from joulebench.models import prepared, shapes, sources, synthetic
from joulebench.models.hub import download

REPO_ID = "joulebench-test/tiny"
GATED_ID = "joulebench-test/tiny-gated"
BIG_ID = "joulebench-test/big"
CT_ID = "joulebench-test/tiny-ct-w8a8"
#: Bigger than the client's 10 MB read chunk, so a dropped connection has data to resume from.
BIG_SIZE = 12 * 2**20
DROP_AT = 10 * 2**20 + 12345


@pytest.fixture(scope="module")
def tiny_seed1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with other weights: a later commit of the same repository."""
    from conftest import TINY_OVERRIDES

    out = tmp_path_factory.mktemp("models") / "tiny-seed1"
    return synthetic.synthesize(out, "tiny-llama", TINY_OVERRIDES, seed=1, tokenizer_vocab_size=512)


class Hub(LoopbackHub):
    """The loopback hub with the commits the tests use."""

    first = second = ct = big = big_sha256 = ""


def files_of(model_dir: Path) -> dict[str, bytes]:
    """A model directory as repository files (joulebench's own source note left out)."""
    return {
        p.relative_to(model_dir).as_posix(): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != prepared.SOURCE_FILE
    }


@pytest.fixture(scope="module")
def shipped_ct(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model as shipped quantized: a compressed-tensors W8A8 checkpoint."""
    from joulebench.models.precisions import get_precision
    from joulebench.models.quantize import write_checkpoint

    out = tmp_path_factory.mktemp("models") / "tiny-ct"
    return write_checkpoint(tiny_model, get_precision("ct-w8a8"), {}, out).path


@pytest.fixture(scope="module")
def hub(tiny_model: Path, tiny_seed1: Path, shipped_ct: Path) -> Iterator[Hub]:
    server = Hub()
    tiny = Repo()
    server.first = tiny.add_commit(files_of(tiny_model))
    server.second = tiny.add_commit(files_of(tiny_seed1))
    server.repos[REPO_ID] = tiny
    gated = Repo(gated=True)
    gated.add_commit(files_of(tiny_model))
    server.repos[GATED_ID] = gated
    ct = Repo()
    server.ct = ct.add_commit(files_of(shipped_ct))
    server.repos[CT_ID] = ct
    big = Repo()
    payload = hashlib.sha256(b"seed").digest() * (BIG_SIZE // 32)
    server.big = big.add_commit(
        {"config.json": b'{"model_type": "llama"}', "model.safetensors": payload}
    )
    server.big_sha256 = hashlib.sha256(payload).hexdigest()
    server.repos[BIG_ID] = big
    with server:
        yield server


def no_stored_token(home: Path) -> dict[str, str]:
    """Environment under which huggingface_hub finds no token of this machine's user (one left
    by `huggingface-cli login` would otherwise be sent to the loopback hub)."""
    return {"HF_HOME": str(home), "HF_TOKEN_PATH": str(home / "token")}


@pytest.fixture
def online(hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_ENDPOINT at the loopback hub, no token (neither HF_TOKEN nor a stored one), faults off
    and their counts reset; returns a fresh cache directory."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    home = tmp_path / "hf-home"
    for key, value in no_stored_token(home).items():
        monkeypatch.setenv(key, value)
    # the client read these at import: point its constants at the empty home too
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    hub.reset_faults()
    hub.clear_log()
    return tmp_path / "cache"


def entry(repo: str, revision: str) -> dict[str, Any]:
    return {"name": "m", "source": "hub", "repo": repo, "revision": revision}


def leftovers(*roots: Path) -> list[str]:
    """Half-written things under ``roots``: .partial directories, .incomplete or .tmp files."""
    found = []
    for root in roots:
        if root.exists():
            found += [
                str(p)
                for p in root.rglob("*")
                if p.name.endswith((".partial", ".incomplete", ".tmp"))
            ]
    return found


def test_download_checks_and_records_every_files_hash(
    hub: Hub, online: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = sources.prepare(entry(REPO_ID, hub.first), tmp_path / "m", "models[0]", online)
    source = json.loads((out / prepared.SOURCE_FILE).read_text())
    assert (source["repo"], source["revision"]) == (REPO_ID, hub.first)
    expected = {
        name: hashlib.sha256(data).hexdigest() for name, data in files_of(tiny_model).items()
    }
    assert {name: f["sha256"] for name, f in source["files"].items()} == expected
    assert source["endpoint"] == hub.url  # where it came from, as the client was told
    served = hub.repos[REPO_ID].commits[hub.first]
    for name, data in served.items():  # the id the hub lists, checked: LFS sha256, else git blob
        if name.endswith(LFS_SUFFIXES):
            assert "git_blob_id" not in source["files"][name]
        else:
            assert source["files"][name]["git_blob_id"] == git_blob_id(data)
    assert any(not n.endswith(LFS_SUFFIXES) for n in served)  # both kinds were checked
    for name in expected:  # links into the shared cache, in the Hugging Face layout
        assert (out / name).is_symlink()
        assert f"models--joulebench-test--tiny/snapshots/{hub.first}" in str(
            (out / name).readlink()
        )
    fetched = sorted(p.rsplit("/", 1)[-1] for p in hub.transfers())
    assert fetched == sorted(n.rsplit("/", 1)[-1] for n in expected)
    assert all(f"/resolve/{hub.first}/" in p for p in hub.transfers())
    assert leftovers(tmp_path) == []


def test_a_second_prepare_reads_the_cache_and_a_new_revision_downloads(
    hub: Hub, online: Path, tmp_path: Path
) -> None:
    sources.prepare(entry(REPO_ID, hub.first), tmp_path / "a", "models[0]", online)
    hub.clear_log()
    again = sources.prepare(entry(REPO_ID, hub.first), tmp_path / "b", "models[0]", online)
    assert hub.requests == []  # not even a listing
    assert (again / "config.json").is_file()
    sources.prepare(entry(REPO_ID, hub.second), tmp_path / "c", "models[0]", online)
    assert f"/{REPO_ID}/resolve/{hub.second}/model.safetensors" in hub.transfers()
    first = json.loads((tmp_path / "a" / prepared.SOURCE_FILE).read_text())["files"]
    second = json.loads((tmp_path / "c" / prepared.SOURCE_FILE).read_text())["files"]
    assert first["model.safetensors"]["sha256"] != second["model.safetensors"]["sha256"]


def test_a_dropped_connection_resumes_where_it_broke_off(
    hub: Hub, online: Path, tmp_path: Path
) -> None:
    hub.faults.drop["model.safetensors"] = (DROP_AT, 1)
    out = sources.prepare(entry(BIG_ID, hub.big), tmp_path / "big", "models[0]", online)
    ranges = [r["range"] for r in hub.requests if r["method"] == "GET" and r["range"]]
    (resumed,) = ranges  # one resume, from a point the first connection had reached
    start = int(str(resumed).removeprefix("bytes=").split("-")[0])
    assert 0 < start <= DROP_AT, resumed
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == hub.big_sha256
    assert leftovers(tmp_path, online) == []


FAULTS = [
    pytest.param(
        "joulebench-test/nope",
        None,
        {},
        "does not exist on http://127.0.0.1",
        id="unknown-repo-404",
    ),
    pytest.param(REPO_ID, "f" * 40, {}, f"has no commit {'f' * 40}", id="unknown-revision"),
    pytest.param(GATED_ID, None, {}, "is gated; set HF_TOKEN", id="gated-no-token-401"),
    pytest.param(
        GATED_ID,
        None,
        {"HF_TOKEN": "hf_wrong_secret_5678"},
        "token in HF_TOKEN has no access",
        id="gated-wrong-token-403",
    ),
    pytest.param(
        BIG_ID, "big", {"drop": True}, "broke off and could not be resumed", id="dropped-for-good"
    ),
    pytest.param(
        REPO_ID,
        None,
        {"corrupt": "model.safetensors"},
        "'model.safetensors' of 'joulebench-test/tiny' at",
        id="wrong-hash",
    ),
    pytest.param(  # a small file, not in LFS: its git blob id is what the hub lists
        REPO_ID,
        None,
        {"corrupt": "config.json"},
        "'config.json' of 'joulebench-test/tiny' at",
        id="wrong-git-blob",
    ),
]


@pytest.mark.parametrize(("repo", "revision", "setup", "fragment"), FAULTS)
def test_each_fault_is_one_line_naming_the_entry_and_leaves_nothing(
    hub: Hub,
    online: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    repo: str,
    revision: str | None,
    setup: dict[str, Any],
    fragment: str,
) -> None:
    rev = hub.big if revision == "big" else revision or hub.first
    if "HF_TOKEN" in setup:
        monkeypatch.setenv("HF_TOKEN", setup["HF_TOKEN"])
    if setup.get("drop"):
        hub.faults.drop["model.safetensors"] = (DROP_AT, None)
    if setup.get("corrupt"):
        hub.faults.corrupt.add(setup["corrupt"])
    spec = {**entry(repo, rev), "name": "llama-pinned"}
    with pytest.raises(ModelSourceError) as err:
        sources.prepare(spec, tmp_path / "m", "models[3]", online)
    message = str(err.value)
    assert message.startswith("models[3] ('llama-pinned'): ")
    assert fragment in message
    assert "\n" not in message
    assert "hf_wrong_secret" not in message
    assert not (tmp_path / "m").exists()
    assert leftovers(tmp_path, online) == []
    if setup.get("corrupt"):
        # the bad blob is gone and the snapshot is not marked verified: a rerun fetches it anew
        assert not list(online.glob("verified/*/*.json"))
        hub.faults.corrupt.clear()
        out = sources.prepare(spec, tmp_path / "m", "models[3]", online)
        served = hub.repos[repo].commits[rev][setup["corrupt"]]
        assert (out / setup["corrupt"]).read_bytes() == served


def test_gated_repo_with_the_token_downloads(
    hub: Hub, online: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.token)
    out = sources.prepare(entry(GATED_ID, hub.first), tmp_path / "g", "models[0]", online)
    assert hub.transfers()  # there were downloads, each with the token
    assert all(r["authorized"] for r in hub.requests if "/resolve/" in str(r["path"]))
    assert hub.token not in (out / prepared.SOURCE_FILE).read_text()


def test_a_prequantized_checkpoint_from_the_hub_is_checked_against_its_entry(
    hub: Hub, online: Path, tmp_path: Path
) -> None:
    spec = {**entry(CT_ID, hub.ct), "quantization": "compressed-tensors"}
    out = sources.prepare(spec, tmp_path / "ct", "models[1]", online)
    assert shapes.checkpoint_quantization(out)["quant_method"] == "compressed-tensors"
    with pytest.raises(ConfigError, match=r"models\[1\]\.quantization.*declares 'gptq'"):
        sources.prepare({**spec, "quantization": "gptq"}, tmp_path / "wrong", "models[1]", online)
    assert not (tmp_path / "wrong").exists()
    assert leftovers(tmp_path) == []


def test_offline_without_a_cached_copy_says_what_to_do(
    hub: Hub, online: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match=r"models\[0\] \('m'\): HF_HUB_OFFLINE is set"):
        sources.prepare(entry(REPO_ID, hub.first), tmp_path / "m", "models[0]", online)
    assert hub.requests == []


def test_a_branch_name_never_reaches_the_hub(hub: Hub, online: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="'main' is not a 40-character commit hash"):
        download(tmp_path / "m", REPO_ID, "main", online, "models[0] ('m')")
    assert hub.requests == []


# -- through the workflow: two studies, one cache ---------------------------------------------

STUDY: dict[str, Any] = {
    "study": "hub",
    "device": "cpu",
    "precisions": ["fp32", "ct-w8a16", "prequantized"],
    "batch_sizes": [1],
    "input_lengths": [8],
    "output_lengths": [4],
    "measurement": {"meter": "estimate", "warmup_runs": 0, "repetitions": 2, "min_window_s": 0.05},
}
RECORDS = [
    "results/records/tiny/fp32/transformers/bs1_in8_out4.json",
    "results/records/tiny/ct-w8a16/transformers/bs1_in8_out4.json",
    "results/records/shipped/prequantized/transformers/bs1_in8_out4.json",
]


def run_study(
    workdir: Path, cfg: dict[str, Any], env: dict[str, str], prefix: tuple[str, ...] = ()
) -> Any:
    import subprocess

    import yaml
    from conftest import snakemake_argv

    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [*prefix, *snakemake_argv(workdir, "--cores", "2", *RECORDS)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


def network_blocker(tmp_path: Path) -> tuple[tuple[str, ...], dict[str, str], Path]:
    """A command prefix and environment under which no process can open a network connection,
    and the file every Python process appends each network connection attempt to.

    Attempts fail: in a fresh network namespace (``unshare -n``: not even loopback is up) where
    the kernel allows it, else in a sitecustomize that makes every Python socket connection
    fail. The sitecustomize logs the attempts in both cases, so a test can tell that none was
    made (under ``unshare -n`` the hub could not have seen one either way)."""
    import subprocess

    attempts = tmp_path / "connection-attempts.log"
    attempts.touch()
    site = tmp_path / "blocknet"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, socket\n"
        "def _blocked(self, *a, **k):\n"
        "    if self.family != socket.AF_UNIX:\n"
        f"        with open({str(attempts)!r}, 'a') as f:\n"
        "            f.write(f'{os.getpid()} {a!r}\\n')\n"
        "        raise OSError('network blocked by the test')\n"
        "    return _connect(self, *a, **k)\n"
        "_connect = socket.socket.connect\n"
        "socket.socket.connect = _blocked\n"
        "socket.socket.connect_ex = _blocked\n"
    )
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        print("network blocker: unshare -n, attempts logged by a sitecustomize")
        return ("unshare", "-n"), env, attempts
    print("network blocker: a sitecustomize that fails and logs every connection")
    return (), env, attempts


@pytest.mark.slow
def test_a_second_study_reuses_the_cache_offline_and_records_the_hashes(
    hub: Hub, online: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    import yaml

    cache = tmp_path / "shared-cache"
    cfg = {
        **STUDY,
        "cache": {"dir": str(cache)},
        "models": [
            {**entry(GATED_ID, hub.first), "name": "tiny"},
            {**entry(CT_ID, hub.ct), "name": "shipped", "quantization": "compressed-tensors"},
        ],
    }
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, **no_stored_token(tmp_path / "hf")}
    first = run_study(tmp_path / "study-a", cfg, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert hub.transfers(), "the first study downloads"
    a = tmp_path / "study-a"
    record = json.loads((a / RECORDS[0]).read_text())
    model = record["provenance"]["model"]
    assert (model["repo"], model["revision"]) == (GATED_ID, hub.first)
    served = hub.repos[GATED_ID].commits[hub.first]
    assert {n: f["sha256"] for n, f in model["files"].items()} == {
        n: hashlib.sha256(data).hexdigest() for n, data in served.items()
    }
    shown = subprocess.run(
        [sys.executable, "-m", "joulebench", "provenance", str(a / RECORDS[0])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(rf"revision\s+{hub.first}", shown)
    weights = model["files"]["model.safetensors"]["sha256"]
    assert re.search(rf"model\.safetensors\s+sha256 {weights}", shown)
    # the token reaches the hub (gated repo) but nothing written: logs, records, provenance
    written = [p for p in a.rglob("*") if p.is_file() and p.suffix in (".json", ".log", ".md")]
    assert written and not [p for p in written if hub.token in p.read_text(errors="ignore")]
    assert hub.token not in first.stderr + first.stdout

    # study B, elsewhere, same cache, and no process can reach a network (not even loopback)
    prefix, block_env, attempts = network_blocker(tmp_path)
    probe = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-c",
            f"import urllib.request; urllib.request.urlopen({hub.url!r})",
        ],
        capture_output=True,
        env={**os.environ, **block_env},
        check=False,
    )
    assert probe.returncode != 0, "the network blocker does not block"
    assert hub.url.rsplit(":", 1)[-1] in attempts.read_text()  # and it sees the attempt
    attempts.write_text("")
    hub.clear_log()
    b = tmp_path / "study-b"
    second = run_study(b, cfg, {**env, **block_env}, prefix)
    assert second.returncode == 0, second.stderr[-3000:]
    assert hub.requests == []  # no second transfer, no listing
    assert attempts.read_text() == ""  # not even an attempt that the blocker stopped
    for rel in RECORDS:
        assert json.loads((b / rel).read_text())["status"] == "ok"
    assert "nothing to download" in (b / "logs/models/tiny.log").read_text()
    assert "reusing the cached checkpoint" in (b / "logs/variants/tiny/ct-w8a16.log").read_text()
    ckpt_a = (a / "results/variants/tiny/ct-w8a16.ckpt/model.safetensors").resolve()
    ckpt_b = (b / "results/variants/tiny/ct-w8a16.ckpt/model.safetensors").resolve()
    assert ckpt_a == ckpt_b and cache in ckpt_a.parents  # one checkpoint, in the shared cache
    quantize_s = []
    for study in (a, b):
        header, row = (
            (study / "results/benchmarks/variants/tiny/ct-w8a16.tsv").read_text().split("\n")[:2]
        )
        quantize_s.append(float(row.split("\t")[header.split("\t").index("s")]))
    print(f"ct-w8a16 variant job: study A {quantize_s[0]:.2f} s, study B {quantize_s[1]:.2f} s")
    assert leftovers(a, b, cache) == []
    shipped = json.loads((b / RECORDS[2]).read_text())["provenance"]["model"]
    assert (shipped["repo"], shipped["revision"]) == (CT_ID, hub.ct)

    # a new commit of the same entry: its download (and what depends on it) runs again
    from test_workflow import planned

    moved = {**cfg, "models": [{**cfg["models"][0], "revision": hub.second}, cfg["models"][1]]}
    (a / "config" / "config.yaml").write_text(yaml.safe_dump(moved))
    jobs = planned(a, env)
    assert jobs["download_model"] == ["results/models/tiny"]
    assert RECORDS[0] in jobs["benchmark"] and RECORDS[2] not in jobs["benchmark"]
