"""Fault injection: the server of a running `joulebench serve` job is killed or frozen mid-load.

The server is a real process started by the job's own lifecycle (kind ``tgi`` with a command,
speaking the OpenAI protocol): tests/standin_server.py, which also starts a helper child.
The job must fail with the server's log tail and the request counts in its error, leave no
process of the server's group behind, and write no result (nor temp file).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from conftest import REPO
from joulebench.study.serving_specs import session_specs
from test_serving_session import study

PLANNED = 150  # 7.5 s at 20 req/s: a fault after 3 answers ends it long before its schedule
COUNTS = re.compile(
    r"(\d+) completed, (\d+) failed \((\d+) timed out\), (\d+) not sent, of (\d+) planned"
)


class ServeJob:
    """`joulebench serve` for one Poisson experiment (60 requests at 20/s) on the stand-in."""

    def __init__(self, tiny_model: Path, tmp_path: Path, timeout_s: float) -> None:
        self.pidfile = tmp_path / "server-pids.json"
        self.out = tmp_path / "out"
        self.log = tmp_path / "serve.log"
        server = {
            "name": "standin",
            "kind": "tgi",
            "protocol": "openai",
            "command": [
                sys.executable,
                str(REPO / "tests" / "standin_server.py"),
                "{port}",
                str(self.pidfile),
            ],
            "startup_timeout_s": 30,
            "stop_timeout_s": 5,
        }
        cfg = study(
            tiny_model,
            "unused",
            servers=[server],
            requests=PLANNED,
            rates=[20],
            arrivals=[{"name": "poisson", "process": "poisson"}],
            timeout_s=timeout_s,
        )
        (spec,) = session_specs(cfg)
        with self.log.open("w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "joulebench", "serve", "--model-dir", str(tiny_model),
                 "--spec-json", json.dumps(spec.to_dict()), "--out-dir", str(self.out)],
                stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def wait_for_load(self, answered: int) -> dict[str, int]:
        """Wait until the stand-in has answered ``answered`` requests of the experiment's load
        (an event, however slow the machine); the server's pids."""
        deadline = time.monotonic() + 60
        while "[1/1] poisson_r20" not in self.text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        pids = json.loads(self.pidfile.read_text())
        stats = f"http://127.0.0.1:{pids['port']}/stats"

        def served() -> int:  # warm-up requests included
            with urllib.request.urlopen(stats, timeout=10) as resp:
                return int(json.load(resp)["answered"])

        before = served()
        while served() < before + answered:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.02)
        return pids

    def finish(self) -> tuple[int, str]:
        try:
            return self.proc.wait(timeout=60), self.text()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_failed_cleanly(job: ServeJob, code: int, text: str, pids: dict[str, int]) -> dict:
    """Exit 2, log tail and counts in the error, group gone, nothing written; the counts."""
    assert code == 2, text
    error = text[text.index("ERROR joulebench: server ") :]
    assert "server 'standin' failed during experiment poisson_r20" in error, text
    assert f"end of {job.out / 'server.log'}" in error and "stand-in server ready" in error
    found = COUNTS.search(error)
    assert found, error
    completed, failed, timed_out, not_sent, planned = map(int, found.groups())
    assert planned == PLANNED and completed + failed + not_sent == PLANNED, found.group(0)
    assert completed >= 1 and not_sent >= 1, found.group(0)
    assert "server stopped" in text  # the lifecycle's stop ran
    assert dead(pids["server"]) and dead(pids["helper"])
    assert live_members(group=pids["server"]) == []  # stop() waited for them
    assert sorted(p.name for p in job.out.iterdir()) == ["server.log"]  # no record, no temp
    return {"completed": completed, "failed": failed, "timed_out": timed_out}


def live_members(group: int) -> list[int]:
    """Processes of ``group`` still running (zombies only await reaping)."""
    return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == group and not dead(p.pid)]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_server_killed_mid_load(tiny_model: Path, tmp_path: Path) -> None:
    job = ServeJob(tiny_model, tmp_path, timeout_s=5)
    pids = job.wait_for_load(answered=3)
    os.kill(pids["server"], signal.SIGKILL)  # the leader only: its helper child stays behind
    code, text = job.finish()
    assert "was killed by SIGKILL" in text, text
    assert_failed_cleanly(job, code, text, pids)


def test_server_that_stops_answering(tiny_model: Path, tmp_path: Path) -> None:
    job = ServeJob(tiny_model, tmp_path, timeout_s=1)
    pids = job.wait_for_load(answered=3)
    os.kill(pids["server"], signal.SIGSTOP)  # alive, holding its port, answering nothing
    code, text = job.finish()
    assert "the server stopped answering" in text, text
    # a request times out after 1 s, the health probe gives up after 1 s, then the stop: the
    # load ends before its schedule does (assert_failed_cleanly: some requests never sent)
    counts = assert_failed_cleanly(job, code, text, pids)
    assert counts["timed_out"] >= 1
