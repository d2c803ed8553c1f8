"""The receiver: a separate aiohttp process on loopback that both queues POST to.

Paths decide how it answers, so one receiver serves every hostile case of the isolation
measurement: ``/hook/*`` answers 200 at once and is the only path counted and timed;
``/slow/*`` answers after SLOW_SECONDS; ``/fail/*`` answers 500; ``/retry/*`` answers 429 with
``Retry-After``; ``/quiet/*`` answers 200 without being counted.

    python -m benchlib.receiver PORT_FILE
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchlib import child_env, python
from benchlib.procs import check_all, process_cpu

SLOW_SECONDS = 2.0
RETRY_AFTER_SECONDS = 3600


class ReceiverState:
    def __init__(self) -> None:
        self.reset("count")

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.latencies: list[float] = []


async def receiver_main(port_file: str) -> None:
    state = ReceiverState()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        state.count += 1
        if state.first is None:
            state.first = now
        state.last = now
        if state.mode == "latency":
            # Both queues send the same envelope: {"id", "type", "timestamp", "data": {"t"}}.
            state.latencies.append(now - json.loads(body)["data"]["t"])
        return web.Response(status=200)

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(SLOW_SECONDS)
        return web.Response(status=200)

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500)

    async def retry(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def quiet(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": state.count,
                "first": state.first,
                "last": state.last,
                # since=N: only those after the first N (arrival order), for a sampler.
                "latencies": state.latencies[int(request.query.get("since", 0)) :]
                if request.query.get("latencies")
                else [],
            }
        )

    async def reset(request: web.Request) -> web.Response:
        state.reset(request.query.get("mode", "count"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/hook/{tail:.*}", hook)
    app.router.add_post("/slow/{tail:.*}", slow)
    app.router.add_post("/fail/{tail:.*}", fail)
    app.router.add_post("/retry/{tail:.*}", retry)
    app.router.add_post("/quiet/{tail:.*}", quiet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    Path(port_file).write_text(str(runner.addresses[0][1]))
    await asyncio.Event().wait()


@dataclass
class ReceiverClient:
    base: str
    session: aiohttp.ClientSession
    pid: int

    def cpu_seconds(self) -> float:
        """user + system CPU of the receiver process so far."""
        return process_cpu(self.pid)

    async def reset(self, mode: str = "count") -> None:
        async with self.session.post(f"{self.base}/_reset", params={"mode": mode}) as r:
            await r.read()

    async def stats(self, latencies: bool = False, since: int = 0) -> dict[str, Any]:
        params = {"latencies": "1", "since": str(since)} if latencies else {}
        async with self.session.get(f"{self.base}/_stats", params=params) as r:
            data: dict[str, Any] = await r.json()
            return data

    async def latencies(self) -> list[float]:
        return sorted((await self.stats(latencies=True))["latencies"])

    async def wait_count(self, n: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            check_all()
            s = await self.stats()
            if s["count"] >= n:
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {s['count']} of {n} in {timeout:.0f}s")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[ReceiverClient]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen(
            [python(), "-m", "benchlib.receiver", str(port_file)], env=child_env()
        )
        try:
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None:
                    raise RuntimeError("the receiver process died")
                await asyncio.sleep(0.05)
            base = f"http://127.0.0.1:{port_file.read_text()}"
            async with aiohttp.ClientSession() as session:
                yield ReceiverClient(base, session, proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    asyncio.run(receiver_main(sys.argv[1]))
