"""Secrets are never logged: every line the relay writes, at every level, searched for every kind
of secret it handles; and the canonical "delivery attempt" line carries its fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
from aiohttp import web

from pgcourier import ops
from pgcourier.logs import configure_logging
from pgcourier.runtime import running
from tests.integration.helpers import Receiver, relay_settings, wait_until

WHSEC = "whsec_" + "c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldC1vbmU="  # base64 of 30 bytes
WHSEC_NEXT = "whsec_" + "c2Vjb25kLXNlY29uZC1zZWNvbmQtc2Vjb25kLXR3bw=="
GITHUB_SECRET = "gh-hmac-secret-b0a7c1e5"
HEADER_VALUE = "api-key-7f3e9d21c4"
RELAY_SLACK_TOKEN = "xoxb-1111-2222-relay-bot-token"
ENDPOINT_SLACK_TOKEN = "xoxb-3333-4444-endpoint-token"
REVOKED_SLACK_TOKEN = "xoxb-5555-6666-revoked-token"
ADMIN_TOKEN = "admin-token-5b8e2f90d1-long-enough-for-the-rule"

SECRETS = {
    "whsec secret": WHSEC,
    "whsec secret (its key)": WHSEC.removeprefix("whsec_"),
    "rotated whsec secret": WHSEC_NEXT,
    "rotated whsec secret (its key)": WHSEC_NEXT.removeprefix("whsec_"),
    "github scheme secret": GITHUB_SECRET,
    "custom header value": HEADER_VALUE,
    "relay's Slack token": RELAY_SLACK_TOKEN,
    "endpoint's Slack token": ENDPOINT_SLACK_TOKEN,
    "revoked Slack token": REVOKED_SLACK_TOKEN,
    "admin token": ADMIN_TOKEN,
}

CANONICAL = {
    "event_id",
    "endpoint_id",
    "delivery_id",
    "event_type",
    "attempt",
    "status",
    "duration_ms",
    "outcome",
}


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """pgcourier's own logs as the CLI sets them up (JSON, level debug) into a buffer; the
    standard library's (aiohttp, asyncpg, slack-sdk) go to caplog, also at debug."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


@pytest.fixture
async def slack_api(aiohttp_server: Any) -> str:
    """chat.postMessage accepting two tokens; the revoked one gets invalid_auth."""

    async def post_message(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        await request.read()
        if token not in (RELAY_SLACK_TOKEN, ENDPOINT_SLACK_TOKEN):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, "channel": "C0123", "ts": "1700000000.000001"})

    app = web.Application()
    app.router.add_post("/api/chat.postMessage", post_message)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/api/"


async def _settled(conn: asyncpg.Connection, n: int) -> bool:
    """``n`` deliveries exist and none is pending."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) = $1 AND bool_and(status <> 'pending') FROM courier.deliveries", n
        )
    )


async def test_no_secret_of_any_kind_reaches_the_logs(
    dsn: str,
    conn: asyncpg.Connection,
    receiver: Receiver,
    slack_api: str,
    log_lines: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    std = await ops.create_endpoint(
        conn,
        url=receiver.url("/std"),
        event_types=["*"],
        secret=WHSEC,
        headers={"X-Api-Key": HEADER_VALUE},
    )
    # A rotation: both secrets sign during the grace period, so both are in every job.
    await ops.rotate_secret(conn, std["id"], secret=WHSEC_NEXT)
    await ops.create_endpoint(
        conn,
        url=receiver.url("/gh"),
        event_types=["*"],
        signature_scheme="github",
        secret=GITHUB_SECRET,
    )
    await ops.create_endpoint(conn, kind="slack", slack_channel="#relay", event_types=["*"])
    await ops.create_endpoint(
        conn,
        kind="slack",
        slack_channel="#own",
        slack_token=ENDPOINT_SLACK_TOKEN,
        event_types=["*"],
    )
    await ops.create_endpoint(
        conn,
        kind="slack",
        slack_channel="#revoked",
        slack_token=REVOKED_SLACK_TOKEN,
        event_types=["*"],
    )
    # Failures first, so that retries, errors and an endpoint disabled are logged too.
    receiver.script["/std"] = [500]
    receiver.script["/gh"] = [503]
    event_id = await ops.enqueue(conn, "request_submitted", {"title": "t", "requester": "r"})
    settings = relay_settings(
        dsn,
        retry_schedule="50ms",
        admin_token=ADMIN_TOKEN,
        slack_bot_token=RELAY_SLACK_TOKEN,
        slack_api_url=slack_api,
        log_level="debug",
    )
    async with running(settings, dsn) as rt:
        await wait_until(lambda: _settled(conn, 5))
        base = f"http://127.0.0.1:{rt.admin_port}"
        async with aiohttp.ClientSession() as http:
            for token in (ADMIN_TOKEN, "wrong-token"):
                headers = {"Authorization": f"Bearer {token}"}
                async with http.get(f"{base}/api/v1/endpoints/{std['id']}", headers=headers):
                    pass
            async with http.get(f"{base}/api/v1/endpoints/nope", headers=headers):
                pass

    structured = log_lines.getvalue()
    out, err = capfd.readouterr()
    everything = structured + caplog.text + out + err
    lines = [json.loads(line) for line in structured.splitlines()]
    # The capture works (so that the search below can fail): debug lines, failures, the Slack
    # endpoint disabled by invalid_auth.
    assert {"debug", "info", "warning"} <= {line["level"] for line in lines}
    attempts = [line for line in lines if line["event"] == "delivery attempt"]
    assert len(attempts) == 7  # 2 + 2 webhooks, 3 Slack
    leaked = [name for name, secret in SECRETS.items() if secret in everything]
    assert leaked == []

    # The canonical line: one per attempt, with every field, right for the event it is about.
    for line in attempts:
        assert line.keys() >= CANONICAL, line
        assert line["event_id"] == str(event_id)
        assert line["event_type"] == "request_submitted"
        assert isinstance(line["delivery_id"], int)
        assert isinstance(line["duration_ms"], float | int)
        assert line["duration_ms"] >= 0
    to_std = [line for line in attempts if line["endpoint_id"] == str(std["id"])]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in to_std] == [
        (1, 500, "retry"),
        (2, 200, "delivered"),
    ]
    assert to_std[0]["delivery_id"] == to_std[1]["delivery_id"]
    assert to_std[0]["retry_in_s"] == pytest.approx(0.05)
    dead = [line for line in attempts if line["outcome"] == "dead"]
    assert len(dead) == 1
    assert "invalid_auth" in dead[0]["error"]
