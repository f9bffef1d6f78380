"""A stand-in inference server for fault tests: the fake streaming server behind a real lifecycle.

Run as ``python standin_server.py PORT [PIDFILE]``: it starts a helper child process (so the
process group has more than one member, as vLLM's has), writes both pids to PIDFILE as JSON
(when given), says so on stdout (the server log) and serves the fake OpenAI/TGI endpoints on
PORT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeserver import FakeServer

if __name__ == "__main__":
    port = int(sys.argv[1])
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pids = {"server": os.getpid(), "helper": helper.pid, "port": port}
    if len(sys.argv) > 2:
        pidfile = Path(sys.argv[2])
        tmp = pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids))
        tmp.rename(pidfile)
    print(f"stand-in server ready: pids {pids}, port {port}", flush=True)
    FakeServer(token_delay_s=0.02).serve(port)
