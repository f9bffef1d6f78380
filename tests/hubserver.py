"""A Hugging Face Hub on 127.0.0.1 for the tests: local repositories at 40-hex commits, served
through the endpoints the real ``huggingface_hub`` client calls when ``HF_ENDPOINT`` points here,
with faults to switch on.

Mirror servers on PyPI (olah, ...) proxy the real Hub and cache what they fetch; none serves
hand-made repositories with injectable faults (a connection dropped mid-file, a wrong hash,
gating), so this fixture speaks the few endpoints ``snapshot_download`` uses:

- ``GET /api/models/{repo}/revision/{rev}``: model info (``sha``, ``siblings``);
- ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file listing, with each file's git
  blob id and, for LFS files (weights), ``lfs.oid`` = the sha256 of the content;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (the
  sha256 for LFS files, the git blob id otherwise), ``Content-Length`` and ``Range`` support
  (``206``), so an interrupted download resumes.

Errors carry the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo), which the client turns into its typed exceptions. Every request is logged in
``requests`` (method, path, Range header, whether an Authorization header came) so tests can show
what was transferred.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

#: Files stored with git-lfs on the Hub (their listing carries a sha256).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the Hub lists as a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_id(*parts: str) -> str:
    """A 40-hex commit id made from ``parts`` (stable across runs)."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


@dataclass
class Repo:
    """A model repository: its commits, each a mapping of path → content."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    gated: bool = False  # needs ``Authorization: Bearer <token>`` with the hub's token

    def add_commit(self, files: dict[str, bytes], *salt: str) -> str:
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name] + b"\0")
        sha = commit_id(digest.hexdigest(), *salt)
        self.commits[sha] = dict(files)
        return sha


@dataclass
class Faults:
    """What the hub does wrong. ``drop`` and ``corrupt`` name files by their path in the repo."""

    #: path → (byte offset, times): the connection closes after that many bytes of the file;
    #: ``times`` is how many requests fail so (None: every request, so a resume gets nothing).
    drop: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    #: paths served with one byte changed (same size, so only a hash check can tell).
    corrupt: set[str] = field(default_factory=set)


class LoopbackHub:
    """The hub server, on a free port of 127.0.0.1, in a daemon thread (a context manager)."""

    def __init__(self, token: str = "hf_test_token_0123456789") -> None:
        self.repos: dict[str, Repo] = {}
        self.faults = Faults()
        self.token = token
        self.requests: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._drops_done: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def transfers(self, method: str = "GET") -> list[str]:
        """Paths of the file downloads (``resolve``) seen so far with ``method``."""
        with self._lock:
            return [
                str(r["path"])
                for r in self.requests
                if r["method"] == method and "/resolve/" in str(r["path"])
            ]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def reset_faults(self) -> None:
        """No faults, and no count of drops already done (a test starts from a clean hub)."""
        with self._lock:
            self.faults.drop.clear()
            self.faults.corrupt.clear()
            self._drops_done.clear()

    def _log(self, entry: dict[str, object]) -> None:
        with self._lock:
            self.requests.append(entry)

    def _drop_point(self, path: str) -> int | None:
        """The byte offset at which this request's connection closes, if it must."""
        if path not in self.faults.drop:
            return None
        offset, times = self.faults.drop[path]
        with self._lock:
            done = self._drops_done.get(path, 0)
            if times is not None and done >= times:
                return None
            self._drops_done[path] = done + 1
        return offset

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # requests are kept in hub.requests, not printed

            def do_HEAD(self) -> None:
                self._route(body=False)

            def do_GET(self) -> None:
                self._route(body=True)

            # -- plumbing ---------------------------------------------------------------------

            def _send(
                self, status: int, payload: bytes, headers: dict[str, str], body: bool
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _error(self, status: int, code: str, message: str, body: bool) -> None:
                payload = json.dumps({"error": message}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Code": code}
                headers["X-Error-Message"] = message
                self._send(status, payload, headers, body)

            def _json(self, value: object, body: bool) -> None:
                self._send(
                    200, json.dumps(value).encode(), {"Content-Type": "application/json"}, body
                )

            # -- routes -----------------------------------------------------------------------

            def _route(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub._log(
                    {
                        "method": self.command,
                        "path": path,
                        "range": self.headers.get("Range"),
                        "authorized": self.headers.get("Authorization") is not None,
                    }
                )
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo_id, kind, rev = "/".join(parts[2:4]), parts[4], parts[5]
                    if kind not in ("revision", "tree"):
                        return self._error(404, "EntryNotFound", f"no route {path}", body)
                    found = self._commit(repo_id, rev, body)
                    if found is not None:
                        self._listing(repo_id, rev, found, kind, body)
                    return None
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo_id, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                    found = self._commit(repo_id, rev, body)
                    if found is not None:
                        self._file(rev, found, file, body)
                    return None
                return self._error(404, "EntryNotFound", f"no route {path}", body)

            def _commit(self, repo_id: str, rev: str, body: bool) -> dict[str, bytes] | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found", body)
                    return None
                if repo.gated:
                    auth = self.headers.get("Authorization")
                    if auth is None:
                        self._error(401, "GatedRepo", f"Access to {repo_id} is restricted", body)
                        return None
                    if auth != f"Bearer {hub.token}":
                        self._error(403, "GatedRepo", f"Access to {repo_id} is restricted", body)
                        return None
                if rev not in repo.commits:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
                    return None
                return repo.commits[rev]

            def _listing(
                self, repo_id: str, rev: str, files: dict[str, bytes], kind: str, body: bool
            ) -> None:
                if kind == "revision":
                    siblings = [{"rfilename": name} for name in sorted(files)]
                    return self._json({"id": repo_id, "sha": rev, "siblings": siblings}, body)
                entries = []
                for name in sorted(files):
                    data = files[name]
                    entry: dict[str, object] = {
                        "type": "file",
                        "path": name,
                        "size": len(data),
                        "oid": git_blob_id(data),
                    }
                    if name.endswith(LFS_SUFFIXES):
                        sha = hashlib.sha256(data).hexdigest()
                        entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                return self._json(entries, body)

            def _file(self, rev: str, files: dict[str, bytes], name: str, body: bool) -> None:
                if name not in files:
                    return self._error(404, "EntryNotFound", f"{name} does not exist", body)
                data = files[name]
                etag = (
                    hashlib.sha256(data).hexdigest()
                    if name.endswith(LFS_SUFFIXES)
                    else git_blob_id(data)
                )
                if name in hub.faults.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                headers = {
                    "X-Repo-Commit": rev,
                    "ETag": f'"{etag}"',
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
                status = 200
                if start:
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                chunk = data[start:]
                drop = hub._drop_point(name) if body else None
                if drop is None:
                    return self._send(status, chunk, headers, body)
                # Announce the whole rest of the file, send up to the drop point, hang up.
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                self.wfile.write(chunk[: max(drop - start, 0)])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return None

        return Handler
