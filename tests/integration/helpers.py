"""Helpers for integration tests: a loopback receiver, relay settings, waiting on state."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from multidict import CIMultiDict

from pgcourier import ops
from pgcourier.settings import Settings
from pgcourier.signing import WebhookVerificationError, verify


@dataclass
class Received:
    path: str
    # Case-insensitive, as HTTP header names are: reqwest sends every name in lower case, aiohttp
    # custom headers in the case they were written.
    headers: CIMultiDict[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Answers webhooks on loopback. ``script[path]`` is a list of statuses returned in turn
    (then ``default``); ``delay[path]`` seconds are waited before answering."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    delay: dict[str, float] = field(default_factory=dict)
    default: int = 200
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        self.requests.append(Received(path, CIMultiDict(request.headers), body))
        async with self._changed:
            self._changed.notify_all()
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        status = self.script[path].pop(0) if self.script[path] else self.default
        return web.Response(status=status, text="ok" if status < 400 else "nope")

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), timeout)

    async def wait_count(self, n: int, path: str | None = None, timeout: float = 10.0) -> None:
        await self.wait_for(
            lambda: len(self.requests if path is None else self.on(path)) >= n, timeout
        )

    def ids(self, path: str | None = None) -> Counter[str]:
        reqs = self.requests if path is None else self.on(path)
        return Counter(r.webhook_id for r in reqs)


# As long as the server demands (32 characters or more).
TOKEN = "t0ken-for-tests-t0ken-for-tests-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def relay_settings(dsn: str, **overrides: Any) -> Settings:
    """Settings for a relay under test: short retries, fast polling unless overridden."""
    values: dict[str, Any] = {
        "database_url": dsn,
        "retry_schedule": "100ms,200ms",
        "retry_jitter": 0.0,
        "poll_interval": 0.2,
        "delivery_timeout": 2.0,
        "lease": 10.0,
        "shutdown_timeout": 5.0,
        "log_level": "warning",
        "admin_port": 0,
        "allow_networks": "127.0.0.0/8,::1/128",  # receivers listen on loopback
        "circuit_failures": 1000,  # circuit tests lower it; others test retries undisturbed
    }
    values.update(overrides)
    return Settings(**values)


async def add_endpoint(
    conn: asyncpg.Connection, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    return await ops.create_endpoint(conn, url=url, event_types=events or ["*"])


def assert_verified(request: Received, secret: str) -> None:
    try:
        verify("standard", request.headers, request.body, secret)
    except WebhookVerificationError as exc:  # pragma: no cover - the failure message matters
        raise AssertionError(f"signature did not verify: {exc}") from exc


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM courier.deliveries GROUP BY 1")
    return {r["status"]: r["n"] for r in rows}


async def wait_until(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll an async or sync check until it is truthy (for database state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
