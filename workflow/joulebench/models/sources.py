"""Model sources: synthesize from an architecture preset, download from the hub, or use a directory.

Every source ends as a normal Hugging Face model directory (config.json, safetensors weights,
tokenizer.json), so every engine loads it the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from joulebench.core.errors import ConfigError, ModelSourceError

log = logging.getLogger(__name__)

_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu"}
_QWEN2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu"}

#: Architecture presets. The large ones copy the published shapes of real models, so a
#: synthetic model with random weights costs the same compute and memory as the real one.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": {  # ~5M parameters: the CPU default
        **_LLAMA,
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 4096,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "dtype": "float32",
    },
    "small-llama": {  # ~100M parameters
        **_LLAMA,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "vocab_size": 8192,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "dtype": "float32",
    },
    "llama-3.2-1b": {
        **_LLAMA,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    },
    "llama-3.1-8b": {
        **_LLAMA,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    },
    "qwen2.5-0.5b": {
        **_QWEN2,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    },
    "qwen2.5-7b": {
        **_QWEN2,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    },
}

_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


def architecture(preset: str, overrides: dict[str, Any] | None = None, key: str = "") -> dict:
    """The full architecture dict of ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ConfigError(
            key or "models.architecture",
            f"unknown architecture '{preset}'; allowed: {', '.join(PRESETS)}",
        )
    arch = {**PRESETS[preset], **(overrides or {})}
    return arch


def parameter_count(arch: dict[str, Any]) -> int:
    """Parameters of a Llama- or Qwen2-shaped model from its architecture dict (no weights).

    Used to size jobs (memory requests) before any model exists; equals the count of the
    model transformers builds from the same dict.
    """
    if arch.get("model_type") not in ("llama", "qwen2"):
        raise ConfigError(
            "models.architecture",
            f"cannot count parameters of model_type {arch.get('model_type')!r}; "
            "allowed: llama, qwen2",
        )
    h, layers, vocab = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    head_dim = arch.get("head_dim") or h // arch["num_attention_heads"]
    q = arch["num_attention_heads"] * head_dim
    kv = arch["num_key_value_heads"] * head_dim
    attention = h * q + 2 * h * kv + q * h
    if arch["model_type"] == "qwen2":
        attention += q + 2 * kv  # q, k and v projections carry biases
    mlp = 3 * h * arch["intermediate_size"]
    per_layer = attention + mlp + 2 * h  # two RMSNorm weights
    embeddings = vocab * h * (1 if arch.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h  # + the final norm


def max_context(model_dir: Path) -> int | None:
    """The model's maximum sequence length, from its config.json, if stated."""
    cfg = json.loads((model_dir / "config.json").read_text())
    value = cfg.get("max_position_embeddings")
    return int(value) if value else None


def _training_corpus() -> list[str]:
    """Plain English text available on every machine: the docstrings of the standard library."""
    import builtins
    import collections
    import json as json_mod
    import os
    import pathlib
    import string
    import textwrap

    texts: list[str] = []
    for module in (builtins, collections, json_mod, os, pathlib, string, textwrap, logging, shutil):
        for name in dir(module):
            doc = getattr(getattr(module, name, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 40:
                texts.append(doc)
    return texts


def train_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer locally and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=_SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **_SPECIAL_TOKENS)
    fast.save_pretrained(out_dir)


def synthesize(
    out_dir: Path,
    preset: str,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    tokenizer_vocab_size: int | None = None,
) -> Path:
    """Build a model with random weights from an architecture and save it with a local tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = architecture(preset, overrides)
    arch_kwargs = {k: v for k, v in arch.items() if k not in ("model_type", "dtype")}
    dtype = getattr(torch, arch["dtype"])
    config = AutoConfig.for_model(arch["model_type"], **arch_kwargs)
    vocab = tokenizer_vocab_size or min(config.vocab_size, 8192)
    if vocab > config.vocab_size:
        raise ConfigError(
            "models.tokenizer_vocab_size",
            f"{vocab} is larger than the model's vocab_size {config.vocab_size}",
        )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("training a %d-token BPE tokenizer", vocab)
    train_tokenizer(vocab, tmp)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    log.info("building %s with random weights (seed %d)", preset, seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %.1fM parameters, saving in %s", preset, n_params / 1e6, arch["dtype"])
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "joulebench_source.json").write_text(
        json.dumps(
            {
                "source": "synthetic",
                "architecture": preset,
                "overrides": overrides or {},
                "seed": seed,
                "parameters": n_params,
                "tokenizer_vocab_size": vocab,
            },
            indent=2,
        )
    )
    _replace_dir(tmp, out_dir)
    return out_dir


#: Where the cache lives when neither the config (``cache.dir``) nor this variable says.
CACHE_ENV = "JOULEBENCH_CACHE_DIR"

#: Written into every prepared model directory: where the model came from (read into records).
SOURCE_FILE = "joulebench_source.json"

_CHUNK = 1 << 20


def cache_dir(configured: str | None = None) -> Path:
    """The model cache shared by every study on this machine or cluster.

    ``cache.dir`` of the config, else ``$JOULEBENCH_CACHE_DIR``, else ``joulebench`` under the
    user's cache (``$XDG_CACHE_HOME``, default ``~/.cache``). Hub downloads live in ``hub/``
    (the Hugging Face cache layout), workflow-written checkpoints in ``checkpoints/``.
    """
    chosen = configured or os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "joulebench").resolve()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_id(path: Path) -> str:
    """The git object id of a file's content (what the hub lists for a non-LFS file)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot_dir(cache: Path, repo: str, revision: str) -> Path:
    """Where the Hugging Face cache layout keeps ``repo`` at commit ``revision``."""
    return cache / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision


def _verified_file(cache: Path, repo: str, revision: str) -> Path:
    """The record of a snapshot whose every file was checked against the hub's hashes."""
    return cache / "verified" / f"models--{repo.replace('/', '--')}" / f"{revision}.json"


def _cached_snapshot(cache: Path, repo: str, revision: str) -> dict[str, Any] | None:
    """The verified file list of ``repo`` at ``revision`` when the cache holds all of it."""
    marker = _verified_file(cache, repo, revision)
    if not marker.is_file():
        return None
    verified = json.loads(marker.read_text())
    snapshot = _snapshot_dir(cache, repo, revision)
    for name, info in verified["files"].items():
        path = snapshot / name
        if not path.is_file() or path.stat().st_size != info["size"]:
            return None  # pruned or damaged by hand: fetch again
    return verified


def _hub_error(err: Exception, repo: str, revision: str, endpoint: str) -> str:
    """One line saying what went wrong with the hub, and what to do; never the token."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token_set = bool(os.environ.get("HF_TOKEN"))
    if isinstance(err, GatedRepoError):
        if token_set:
            return (
                f"'{repo}' is gated and the token in HF_TOKEN has no access to it; request access "
                "on the repository's page with the account of that token"
            )
        return f"'{repo}' is gated; set HF_TOKEN to a token of an account granted access"
    if isinstance(err, RevisionNotFoundError):
        return f"'{repo}' has no commit {revision}; pin a commit of its history"
    if isinstance(err, RepositoryNotFoundError):
        hint = (
            "check the name, and that the account of HF_TOKEN can read it"
            if token_set
            else "check the name, or set HF_TOKEN if it is private"
        )
        return f"'{repo}' does not exist on {endpoint} or is private; {hint}"
    if isinstance(err, OfflineModeIsEnabled):
        return _offline_message(repo, revision)
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        return f"the hub answered HTTP {err.response.status_code}: {_first_line(err)}"
    if isinstance(err, LocalEntryNotFoundError) or type(err).__name__ in (
        "ConnectError",
        "ConnectTimeout",
    ):
        return (
            f"cannot reach {endpoint} ({_first_line(err.__cause__ or err)}); prepare models on a "
            "machine with internet (the login node, see README), or use `source: local`"
        )
    if isinstance(err, OSError) or type(err).__name__ in ("RemoteProtocolError", "ReadTimeout"):
        return (
            "the download broke off and could not be resumed after the client's retries "
            f"({_first_line(err)}); run again to resume"
        )
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _offline_message(repo: str, revision: str) -> str:
    return (
        f"HF_HUB_OFFLINE is set and the cache holds no verified copy of '{repo}' at {revision}; "
        "prepare it where the hub is reachable (the login node, see README), or use "
        "`source: local` with a downloaded directory"
    )


def _fetch(cache: Path, repo: str, revision: str, where: str) -> dict[str, Any]:
    """Download ``repo`` at ``revision`` into the cache and check every file's hash.

    Returns the verified file list (path → size, sha256, the hub's id). A file whose hash
    differs from the hub's listing is removed from the cache and the download fails.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelSourceError(f"{where}: {_offline_message(repo, revision)}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        api = HfApi(endpoint=endpoint)
        listing = [
            f
            for f in api.list_repo_tree(repo, revision=revision, recursive=True)
            if isinstance(f, RepoFile)
        ]
        log.info("downloading %s at %s (%d files) from %s", repo, revision, len(listing), endpoint)
        snapshot = Path(
            snapshot_download(repo, revision=revision, cache_dir=cache / "hub", endpoint=endpoint)
        )
    except Exception as err:  # the hub client raises many types; each gets one plain line
        message = _hub_error(err, repo, revision, endpoint)
        raise ModelSourceError(
            f"{where}: could not download '{repo}' at {revision}: {message}"
        ) from err
    files: dict[str, dict[str, Any]] = {}
    for entry in listing:
        path = snapshot / entry.path
        sha256 = file_sha256(path)
        if entry.lfs is not None:
            expected, got, kind = entry.lfs.sha256, sha256, "sha256"
        else:
            expected, got, kind = entry.blob_id, _git_blob_id(path), "git blob id"
        if got != expected:
            blob = path.resolve()
            path.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise ModelSourceError(
                f"{where}: '{entry.path}' of '{repo}' at {revision} has {kind} {got}, the hub "
                f"lists {expected}; the file was removed from the cache (run again to refetch it)"
            )
        files[entry.path] = {
            "size": path.stat().st_size,
            "sha256": sha256,
            kind.replace(" ", "_"): expected,
        }
    verified = {"repo": repo, "revision": revision, "endpoint": endpoint, "files": files}
    marker = _verified_file(cache, repo, revision)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(verified, indent=2, sort_keys=True))
    tmp.rename(marker)
    return verified


def download(
    out_dir: Path,
    repo: str,
    revision: str,
    cache: Path | None = None,
    where: str = "models[]",
) -> Path:
    """``repo`` at commit ``revision`` from the Hugging Face Hub, through the shared cache.

    The files are fetched once per cache (``cache_dir()``) and checked against the hub's
    hashes; ``out_dir`` becomes a directory of links into the cache plus ``joulebench_source.json``
    (repo, revision, each file's sha256 and size), which benchmark records carry as provenance.
    ``where`` names the model entry in errors. Nothing partial is left on failure.
    """
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ModelSourceError(
            f"{where}: revision '{revision}' is not a 40-character commit hash; pin a commit"
        )
    cache = cache or cache_dir()
    verified = _cached_snapshot(cache, repo, revision)
    if verified is not None:
        log.info("%s at %s: in the cache %s, nothing to download", repo, revision, cache)
    else:
        verified = _fetch(cache, repo, revision, where)
    snapshot = _snapshot_dir(cache, repo, revision)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    try:
        _remove(tmp)
        tmp.mkdir(parents=True)
        for name in verified["files"]:
            if name == SOURCE_FILE:
                continue  # ours is written below; never write through a link into the cache
            link = tmp / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(snapshot / name)
        (tmp / SOURCE_FILE).write_text(
            json.dumps({"source": "hub", **verified, "cache": str(snapshot)}, indent=2)
        )
        _replace_dir(tmp, out_dir)
    finally:
        _remove(tmp)
    return out_dir


def source_info(model_dir: Path) -> dict[str, Any]:
    """Where a prepared model came from: its ``joulebench_source.json``, or its path."""
    model_dir = Path(model_dir)
    path = model_dir / SOURCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"source": "local", "path": str(model_dir.resolve())}


def fingerprint(model_dir: Path) -> str:
    """A content id of a prepared model: what a checkpoint made from it is cached under.

    A hub model is its repo and commit (its files are verified against them); any other model
    is the sha256 of its files' names and contents.
    """
    info = source_info(model_dir)
    digest = hashlib.sha256()
    if info.get("source") == "hub":
        digest.update(f"hub\0{info['repo']}\0{info['revision']}".encode())
        return digest.hexdigest()
    root = Path(model_dir).resolve()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\0")
    return digest.hexdigest()


def check_local(path: Path, key: str = "models.path") -> None:
    """Reject a local model directory that does not exist or lacks config.json."""
    if not path.is_dir():
        raise ConfigError(key, f"directory '{path}' does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(key, f"'{path}' has no config.json; it is not a model directory")


def link_local(out_dir: Path, path: Path) -> Path:
    """Expose a user's model directory under results/ as a symlink (nothing is copied)."""
    check_local(path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.is_symlink() or out_dir.exists():
        _remove(out_dir)
    out_dir.symlink_to(path.resolve(), target_is_directory=True)
    return out_dir


def checkpoint_quantization(model_dir: Path) -> dict[str, Any] | None:
    """The ``quantization_config`` a checkpoint's config.json declares (None: not quantized)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("quantization_config")


def check_declared_quantization(
    model_dir: Path, declared: str | None, key: str = "models[].quantization"
) -> None:
    """Reject a checkpoint whose quantization differs from ``models[i].quantization``.

    A quantized checkpoint that is not declared is rejected too: a cast precision would run it
    as something it is not.
    """
    found = (checkpoint_quantization(model_dir) or {}).get("quant_method")
    if found == declared:
        return
    where = f"{Path(model_dir) / 'config.json'}"
    if declared is None:
        raise ConfigError(
            key,
            f"is not set, but {where} is a {found} checkpoint (quantization_config.quant_method "
            f"'{found}'); declare `quantization: {found}` and run the prequantized precision",
        )
    raise ConfigError(
        key,
        f"declares '{declared}', but {where} "
        + (
            f"has quantization_config.quant_method '{found}'"
            if found is not None
            else "has no quantization_config (the checkpoint is not quantized)"
        ),
    )


def prepare(
    spec: dict[str, Any], out_dir: Path, key: str = "models[]", cache: Path | None = None
) -> Path:
    """Prepare one model (a ``models:`` entry of the config, ``key``) into ``out_dir``.

    A hub model goes through the shared cache ``cache`` (default: :func:`cache_dir`). A hub or
    local checkpoint must ship the quantization its entry declares (and none if it declares
    none); see :func:`check_declared_quantization`.
    """
    source = spec["source"]
    if source == "synthetic":
        return synthesize(
            out_dir,
            spec["architecture"],
            spec.get("overrides"),
            spec.get("seed", 0),
            spec.get("tokenizer_vocab_size"),
        )
    if source == "hub":
        where = f"{key} ('{spec.get('name', spec['repo'])}')"
        prepared = download(out_dir, spec["repo"], spec["revision"], cache, where)
    elif source == "local":
        prepared = link_local(out_dir, Path(spec["path"]))
    else:
        raise ConfigError(f"{key}.source", f"unknown source '{source}'")
    try:
        check_declared_quantization(prepared, spec.get("quantization"), f"{key}.quantization")
    except ConfigError:
        _remove(prepared)  # a wrong checkpoint must not look prepared
        raise
    return prepared


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished directory into place, replacing an old one."""
    _remove(out_dir)
    tmp.rename(out_dir)
