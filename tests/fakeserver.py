"""A fast fake streaming server on loopback (aiohttp, own process), for load-generator tests.

It answers OpenAI ``/v1/completions`` and TGI ``/generate_stream`` with ``max_tokens`` SSE
events, ``token_delay_s`` apart, and records the server-side arrival time of every request.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

from aiohttp import web


class FakeServer:
    def __init__(
        self,
        token_delay_s: float = 0.0,
        fail_every: int = 0,
        hang: bool = False,
        stop_after: int = 0,
    ):
        self.token_delay_s = token_delay_s
        self.stop_after = stop_after  # > 0: every answer ends after this many tokens (an EOS)
        self.fail_every = fail_every
        self.hang = hang
        self.arrivals: list[float] = []
        self.wall_arrivals: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self.answered = 0  # streams written to the end

    async def _stream(
        self, request: web.Request, tgi: bool, chat: bool = False
    ) -> web.StreamResponse:
        self.arrivals.append(time.perf_counter())
        self.wall_arrivals.append(time.time())
        body = await request.json()
        self.bodies.append(body)
        if self.fail_every and len(self.arrivals) % self.fail_every == 0:
            return web.Response(status=503, text="overloaded")
        if self.hang:
            await asyncio.sleep(2)
            return web.Response(text="too late")
        n = body["parameters"]["max_new_tokens"] if tgi else body.get("max_tokens") or 4
        if self.stop_after:
            n = min(n, self.stop_after)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if tgi:
                last = i == n - 1
                event = {
                    "token": {"id": i, "text": "x", "special": False},
                    "generated_text": "x" * n if last else None,
                    "details": {"generated_tokens": n} if last else None,
                }
            elif chat:
                event = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
            else:
                event = {"choices": [{"index": 0, "text": "x"}]}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        if not tgi:
            usage = {
                "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                "usage": {"completion_tokens": n},
            }
            await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        self.answered += 1
        return resp

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, tgi=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, tgi=False, chat=True)

    async def _tgi(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, tgi=True)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "arrivals": self.arrivals,
                "wall_arrivals": self.wall_arrivals,
                "bodies": self.bodies,
                "answered": self.answered,
            }
        )

    def serve(self, port: int = 0) -> None:
        """Serve on loopback (``port`` 0: a free one), printing the port first."""
        app = web.Application()
        app.router.add_post("/v1/completions", self._openai)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/generate_stream", self._tgi)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)

        async def main() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
            await asyncio.Event().wait()

        asyncio.run(main())


class FakeServerProcess:
    """The fake server in its own process (no shared GIL with the load generator under test)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FakeServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, json.dumps(self.options)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self._proc.stdout.readline())}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()

    def _stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            return json.load(resp)

    @property
    def arrivals(self) -> list[float]:
        """perf_counter times (same clock in every process) at which requests arrived."""
        return self._stats()["arrivals"]

    @property
    def wall_arrivals(self) -> list[float]:
        """time.time() at each arrival (for peers that report wall-clock schedules)."""
        return self._stats()["wall_arrivals"]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self._stats()["bodies"]


if __name__ == "__main__":
    FakeServer(**json.loads(sys.argv[1])).serve()
