"""The Slack connector: slack-sdk for real, against a local fake of Slack's Web API."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from pgcourier import ops
from pgcourier.runtime import prepare_schema, running
from tests.integration.attempts import all_attempts
from tests.integration.helpers import relay_settings, statuses, wait_until

TOKEN = "xoxb-1111-2222-test-token"
OTHER_TOKEN = "xoxb-9999-8888-other-token"


@dataclass
class FakeSlack:
    """chat.postMessage that checks the token and the request's shape and answers as scripted:
    ``"ok"``, a Slack error string, ``429`` (with Retry-After: 1) or ``500``."""

    base_url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=lambda: {TOKEN, OTHER_TOKEN})
    used_tokens: list[str] = field(default_factory=list)

    async def post_message(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if token not in self.tokens:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        assert request.content_type == "application/json"
        body = await request.json()
        assert body["channel"]
        assert isinstance(body["text"], str)
        assert body["text"]
        assert isinstance(body["blocks"], list)
        self.posts.append(body)
        self.times.append(time.monotonic())
        self.used_tokens.append(token)
        answer = self.script.pop(0) if self.script else "ok"
        if answer == "429":
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        if answer == "500":
            return web.Response(status=500, text="oops")
        if answer != "ok":
            return web.json_response({"ok": False, "error": answer})
        return web.json_response(
            {"ok": True, "channel": "C0123", "ts": f"1700000000.{len(self.posts):06d}"}
        )


@pytest.fixture
async def slack(aiohttp_server: Any) -> FakeSlack:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/chat.postMessage", fake.post_message)
    server = await aiohttp_server(app)
    fake.base_url = f"http://127.0.0.1:{server.port}/api/"
    return fake


def slack_settings(dsn: str, fake: FakeSlack, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "slack_bot_token": TOKEN,
        "slack_api_url": fake.base_url,
        "retry_schedule": "100ms,100ms",
    }
    values.update(overrides)
    return relay_settings(dsn, **values)


REQUEST = {
    "title": "New laptop for Ada",
    "requester": "ada@example.com",
    "description": "The old one no longer charges.",
    "cost": 1899,
    "team": "platform",
}


async def test_default_channel_gets_request_submitted_as_block_kit(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack
) -> None:
    settings = slack_settings(dsn, slack)
    await prepare_schema(dsn, settings)  # creates the managed endpoint for #integrations
    [endpoint] = await ops.list_endpoints(conn)
    assert (endpoint["kind"], endpoint["slack_channel"]) == ("slack", "#integrations")
    assert endpoint["event_types"] == ["request_submitted"]
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    await ops.enqueue(conn, "order.paid", {"n": 1})  # not for Slack by default
    async with running(settings, dsn):
        await wait_until(lambda: len(slack.posts) == 1)
        await wait_until(lambda: _all(conn, "delivered"))
    [post] = slack.posts
    assert post["channel"] == "#integrations"
    assert post["text"] == "New request: New laptop for Ada (from ada@example.com)"
    header, fields, description, context = post["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "New laptop for Ada"},
    }
    assert [f["text"] for f in fields["fields"]] == [
        "*Requester*\nada@example.com",
        "*Cost*\n1899",
        "*Team*\nplatform",
    ]
    assert description["text"]["text"] == "The old one no longer charges."
    assert str(event_id) in context["elements"][0]["text"]
    assert post["metadata"] == {
        "event_type": "pgcourier_event",
        "event_payload": {"event_id": str(event_id), "event_type": "request_submitted"},
    }
    [attempt] = await all_attempts(conn, str(event_id))
    assert attempt["response_body"] == "ok ts=1700000000.000001"
    # Running prepare_schema again keeps one managed endpoint, in step with the settings.
    await prepare_schema(dsn, slack_settings(dsn, slack, slack_default_channel="#requests"))
    [endpoint] = await ops.list_endpoints(conn)
    assert endpoint["slack_channel"] == "#requests"


async def _all(conn: asyncpg.Connection, status: str) -> bool:
    counts = await statuses(conn)
    return bool(counts) and set(counts) == {status}


@pytest.mark.parametrize(
    "error",
    [
        "invalid_auth",
        "token_revoked",
        "account_inactive",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
    ],
)
async def test_permanent_errors_dead_letter_at_once_and_flag_the_endpoint(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack, error: str
) -> None:
    endpoint = await ops.create_endpoint(
        conn, kind="slack", slack_channel="#ops", event_types=["request_submitted"]
    )
    slack.script = [error]
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    async with running(slack_settings(dsn, slack), dsn):
        await wait_until(lambda: _all(conn, "dead"))
    assert len(slack.posts) == 1
    shown = await ops.get_endpoint(conn, endpoint["id"])
    assert shown["enabled"] is False
    assert shown["disabled_reason"] == f"Slack said {error}"
    [attempt] = await all_attempts(conn, str(event_id))
    assert attempt["error"] == f"slack: {error}"


async def test_rate_limits_wait_for_retry_after(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack
) -> None:
    await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
    slack.script = ["429"]
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    async with running(slack_settings(dsn, slack, retry_schedule="50ms"), dsn):
        await wait_until(lambda: _all(conn, "delivered"), timeout=10)
    assert slack.times[1] - slack.times[0] >= 0.95  # Retry-After: 1, not the 50 ms schedule
    attempts = await all_attempts(conn, str(event_id))
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (429, "retry"),
        (200, "delivered"),
    ]


async def test_server_errors_retry_on_schedule_then_dead_letter_and_replay(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack
) -> None:
    await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
    slack.script = ["500", "internal_error", "500"]
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    async with running(slack_settings(dsn, slack), dsn):
        await wait_until(lambda: _all(conn, "dead"))
        assert len(slack.posts) == 3  # the first attempt and both retries
        page = await ops.list_dead(conn)
        await ops.replay_dead(conn, [d["id"] for d in page["data"]])
        await wait_until(lambda: _all(conn, "delivered"))
    attempts = await all_attempts(conn, str(event_id))
    assert [(a["status_code"], a["error"]) for a in attempts] == [
        (500, "slack: HTTP 500"),
        (200, "slack: internal_error"),
        (500, "slack: HTTP 500"),
        (200, None),
    ]
    assert len({p["metadata"]["event_payload"]["event_id"] for p in slack.posts}) == 1


async def test_endpoint_token_and_template(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack
) -> None:
    created = await ops.create_endpoint(
        conn,
        kind="slack",
        slack_channel="C0123ABC",
        slack_token=OTHER_TOKEN,
        event_types=["deploy.*"],
        template="Deployed {data.service} to {data.env} by {data.who}{data.missing}",
    )
    assert "slack_token" not in created
    assert created["slack_token_set"] is True
    await ops.enqueue(conn, "deploy.finished", {"service": "api", "env": "prod", "who": "Ada"})
    async with running(slack_settings(dsn, slack), dsn):
        await wait_until(lambda: _all(conn, "delivered"))
    [post] = slack.posts
    assert slack.used_tokens == [OTHER_TOKEN]
    assert post["text"] == "Deployed api to prod by Ada"
    assert post["channel"] == "C0123ABC"


async def test_the_token_never_reaches_the_logs(
    dsn: str,
    conn: asyncpg.Connection,
    slack: FakeSlack,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
    slack.script = ["500"]
    await ops.enqueue(conn, "request_submitted", REQUEST)
    async with running(slack_settings(dsn, slack, log_level="debug"), dsn):
        await wait_until(lambda: _all(conn, "delivered"))
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert "delivery attempt" in logged  # the relay did log, at debug
    assert TOKEN not in logged
    assert "xoxb-" not in logged


async def test_slack_endpoints_through_the_api(api: Any, conn: asyncpg.Connection) -> None:
    from tests.integration.helpers import AUTH

    response = await api.post(
        "/api/v1/endpoints",
        headers=AUTH,
        json={
            "kind": "slack",
            "slack_channel": "#requests",
            "slack_token": TOKEN,
            "event_types": ["request_submitted"],
        },
    )
    assert response.status == 201
    created = await response.json()
    assert created["kind"] == "slack"
    assert "slack_token" not in created
    assert TOKEN not in json.dumps(created)
    for body, field_name in (
        ({"kind": "slack", "event_types": ["a"]}, "slack_channel"),
        (
            {"kind": "slack", "slack_channel": "#x", "slack_token": "nope", "event_types": ["a"]},
            "slack_token",
        ),
        ({"event_types": ["a"]}, "url"),
    ):
        response = await api.post("/api/v1/endpoints", headers=AUTH, json=body)
        assert response.status == 422
        assert (await response.json())["error"]["field"] == field_name
    assert await conn.fetchval("SELECT count(*) FROM courier.endpoints") == 1


async def test_connection_errors_are_retried_then_dead_lettered(
    dsn: str, conn: asyncpg.Connection, slack: FakeSlack
) -> None:
    await ops.create_endpoint(conn, kind="slack", slack_channel="#ops", event_types=["*"])
    event_id = await ops.enqueue(conn, "request_submitted", REQUEST)
    nowhere = "http://127.0.0.1:1/api/"  # nothing listens on port 1
    async with running(slack_settings(dsn, slack, slack_api_url=nowhere), dsn):
        await wait_until(lambda: _all(conn, "dead"))
    attempts = await all_attempts(conn, str(event_id))
    assert len(attempts) == 3  # the schedule (two retries) ran out: not treated as permanent
    assert all(a["error"].startswith("slack: ") for a in attempts)
    assert all(a["status_code"] is None for a in attempts)
    [endpoint] = await ops.list_endpoints(conn)
    assert endpoint["enabled"] is True
