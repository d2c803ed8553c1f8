"""The Slack transport against hostile surroundings: proxy variables, odd answers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from pgcourier import ops
from pgcourier.runtime import running
from tests.integration.attempts import all_attempts
from tests.integration.helpers import wait_until
from tests.integration.test_slack import REQUEST, FakeSlack, slack_settings


@pytest.fixture
async def fake_slack(aiohttp_server: Any) -> FakeSlack:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/chat.postMessage", fake.post_message)
    server = await aiohttp_server(app)
    fake.base_url = f"http://127.0.0.1:{server.port}/api/"
    return fake


async def test_slack_ignores_proxy_variables(
    dsn: str, conn: asyncpg.Connection, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15.8: slack-sdk reads HTTPS_PROXY/HTTP_PROXY itself, so without an explicit "no
    # proxy" its calls left through the proxy while the SSRF guard only saw the proxy's address.
    connections: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Record what a proxy would be asked for, then hang up.
        connections.append(await reader.readline())
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
        await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
        await ops.enqueue(conn, "request_submitted", REQUEST)
        async with running(slack_settings(dsn, fake_slack), dsn):
            await wait_until(lambda: fake_slack.posts or connections)
    finally:
        server.close()
        await server.wait_closed()
    assert connections == []
    assert len(fake_slack.posts) == 1
    assert fake_slack.posts[0]["channel"] == "#ops"


async def test_a_nul_in_slacks_answer_is_still_recorded(
    dsn: str, conn: asyncpg.Connection, fake_slack: FakeSlack
) -> None:
    # Postgres text refuses NUL: kept as is, the attempt could not be written at all.
    fake_slack.script = ["weird\x00error"]
    await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    async with running(slack_settings(dsn, fake_slack), dsn):
        await wait_until(lambda: len(fake_slack.posts) == 2)
        await wait_until(lambda: all_attempts(conn, str(event_id)))
    attempts = await all_attempts(conn, str(event_id))
    assert attempts[0]["error"] == "slack: weird\ufffderror"
    assert "\x00" not in attempts[0]["response_body"]
