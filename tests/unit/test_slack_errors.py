"""What the Slack transport records of what Slack (or whatever answers at its API URL) sends back:
bounded and storable like a webhook receiver's answers, whatever their length and bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from pgcourier.model import ERROR_LIMIT, Job
from pgcourier.slack import SlackTransport

BODY_LIMIT = 512


def _job() -> Job:
    return Job(
        delivery_id=1,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="request_submitted",
        payload='{"title": "t"}',
        created_at=datetime.now(UTC),
        url="",
        secrets=(),
        kind="slack",
        slack_channel="#x",
    )


async def test_slacks_error_and_body_are_bounded_and_storable(aiohttp_server: Any) -> None:
    hostile = "line one\nline\x00two " + "x" * 10_000

    async def post_message(request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error": hostile, "padding": "y" * 10_000})

    app = web.Application()
    app.router.add_post("/api/chat.postMessage", post_message)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        transport = SlackTransport(
            session,
            token="xoxb-1",
            api_url=f"http://127.0.0.1:{server.port}/api/",
            response_body_limit=BODY_LIMIT,
        )
        result = await transport.send(_job())
    assert result.error is not None
    assert result.response_body is not None
    assert result.error.startswith("slack: line one line\ufffdtwo xxx")
    assert len(result.error) <= ERROR_LIMIT
    assert "\n" not in result.error
    assert "\x00" not in result.error
    assert len(result.response_body) <= BODY_LIMIT
    assert "\x00" not in result.response_body
