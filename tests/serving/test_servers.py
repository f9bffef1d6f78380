"""Server lifecycle with tiny real subprocesses: health, timeouts, killing the process group."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from joulebench.core.errors import ConfigError
from joulebench.serving.servers import Server, ServerError, build_command, free_port
from joulebench.study.serving_specs import ServerSpec, check_server

#: A stand-in server: starts a child, then serves /health on the port it is given.
TOY = textwrap.dedent(
    """
    import http.server, signal, subprocess, sys
    port, pidfile, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(pidfile, "w").write(str(child.pid))
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "never":
        import time; time.sleep(600)
    if mode == "crash":
        sys.exit(3)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a):
            print("health", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def toy_server(tmp_path: Path, mode: str, **kw) -> tuple[Server, Path]:
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    pidfile = tmp_path / "child.pid"
    spec = ServerSpec(
        name="toy",
        kind="tgi",
        command=[sys.executable, str(script), "{port}", str(pidfile), mode],
        **kw,
    )
    return Server(spec, "/models/x", "fp32", "cpu", tmp_path / "server.log"), pidfile


def gone(pid: int, within_s: float = 2.0) -> bool:
    """The process is dead (a zombie waiting to be reaped counts) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_start_healthy_then_stop_kills_the_group(tmp_path: Path) -> None:
    server, pidfile = toy_server(tmp_path, "ok")
    with server:
        leader = server.pid
        assert server.url.startswith("http://127.0.0.1:") and server.startup_s is not None
        child = int(pidfile.read_text())
        assert psutil.pid_exists(child)
    assert gone(leader) and gone(child)
    log = (tmp_path / "server.log").read_text()
    assert log.startswith("$ ") and "health" in log


def test_stubborn_server_is_killed(tmp_path: Path) -> None:
    server, pidfile = toy_server(tmp_path, "stubborn", stop_timeout_s=0.5)
    server.start()
    leader, child = server.pid, int(pidfile.read_text())
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start >= 0.5  # it gave SIGTERM its stop_timeout_s
    assert server.returncode == -signal.SIGKILL  # then killed what ignored it
    assert gone(leader) and gone(child)


def test_health_timeout_stops_the_server(tmp_path: Path) -> None:
    server, pidfile = toy_server(tmp_path, "never", startup_timeout_s=1.0)
    with pytest.raises(ServerError, match="not healthy after 1 s"):
        server.start()
    assert gone(int(pidfile.read_text()))
    assert server.proc is None


def test_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    server, pidfile = toy_server(tmp_path, "crash")
    with pytest.raises(ServerError, match="exited before"):
        server.start()
    # the leader exited, leaving its child in the group: start() stopped the group before raising
    assert gone(int(pidfile.read_text()))
    assert server.proc is None


def test_failure_inside_the_block_still_stops(tmp_path: Path) -> None:
    server, pidfile = toy_server(tmp_path, "ok")
    with pytest.raises(RuntimeError), server:
        raise RuntimeError("experiment failed")
    assert gone(int(pidfile.read_text()))


def test_commands_are_argument_lists() -> None:
    tf = build_command(ServerSpec("a", "transformers"), "/m", "bf16", "cpu", "127.0.0.1", 8001)
    assert tf[1:4] == ["serve", "/m", "--host"] and "--continuous-batching" in tf
    assert tf[tf.index("--dtype") + 1] == "bfloat16" and "--cb-num-blocks" in tf
    vllm = ServerSpec("v", "vllm", options={"max_num_seqs": 64, "enforce_eager": True})
    cmd = build_command(vllm, "/m; rm -rf /", "fp16", "cuda", "127.0.0.1", 9000)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "/m; rm -rf /" in cmd  # one argument, never a shell string
    assert cmd[-3:] == ["--max-num-seqs", "64", "--enforce-eager"]
    tgi = ServerSpec("t", "tgi", command=["srun", "--container-image=tgi", "--port={port}"])
    assert build_command(tgi, "/m", "bf16", "cuda", "127.0.0.1", 7)[-1] == "--port=7"
    with pytest.raises(ConfigError, match="precision 'cpu-int8' cannot be served"):
        build_command(ServerSpec("a", "transformers"), "/m", "cpu-int8", "cpu", "h", 1)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (ServerSpec("t", "tgi"), "s.command"),
        (ServerSpec("t", "tgi", command=["x", "{modeldir}"]), r"s.command\[1\]"),
        (ServerSpec("e", "external"), "s.url"),
        (ServerSpec("v", "vllm", url="http://x"), "s.url"),
        (ServerSpec("x", "triton"), "s.kind"),
    ],
)
def test_bad_server_specs_name_the_key(spec: ServerSpec, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        check_server(spec, "s")


def test_free_port_is_bindable() -> None:
    import errno
    import socket

    port = free_port()
    with socket.socket() as probe:  # nobody listens there (the socket it came from is closed)
        assert probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_stopped_server_is_stopped_without_waiting_for_the_kill(tmp_path: Path) -> None:
    import os
    import signal

    server, pidfile = toy_server(tmp_path, "ok", stop_timeout_s=10)
    server.start()
    leader, child = server.pid, int(pidfile.read_text())
    os.kill(leader, signal.SIGSTOP)  # a frozen server: SIGTERM alone would wait for SIGCONT
    server.stop()
    # SIGCONT after SIGTERM: it ended by the SIGTERM, so stop() never waited out the 10 s
    # stop_timeout_s that ends in a SIGKILL
    assert server.returncode == -signal.SIGTERM
    assert gone(leader, within_s=0) and gone(child, within_s=0)  # stop() waited for the group
