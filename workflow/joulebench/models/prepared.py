"""A prepared model directory: the record of where it came from (``joulebench_source.json``), its
content fingerprint, file hashes, and replacing a directory whole (nothing partial is left).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

#: Written into every prepared model directory: where the model came from (read into records).
SOURCE_FILE = "joulebench_source.json"

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content (what the hub lists for a non-LFS file)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def remove_path(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a directory tree, if there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished directory into place, replacing an old one."""
    remove_path(out_dir)
    tmp.rename(out_dir)
