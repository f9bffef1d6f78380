"""Models from the Hugging Face Hub: download at a pinned commit into the shared model cache,
every file checked against the hub's hashes, and one plain line for each way the hub can fail.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from joulebench.core.errors import ModelSourceError
from joulebench.models.prepared import (
    SOURCE_FILE,
    file_sha256,
    git_blob_id,
    remove_path,
    replace_dir,
)

log = logging.getLogger(__name__)

#: Where the cache lives when neither the config (``cache.dir``) nor this variable says.
CACHE_ENV = "JOULEBENCH_CACHE_DIR"


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
            expected, got, kind = entry.blob_id, git_blob_id(path), "git blob id"
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
        remove_path(tmp)
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
        replace_dir(tmp, out_dir)
    finally:
        remove_path(tmp)
    return out_dir
