"""A key that does not open the stored secrets (issue 12, part 3): writers refuse to write under
it, and a relay that meets such a secret hands the work back instead of failing it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.errors import ConfigurationError
from pgcourier.logs import configure_logging
from pgcourier.metrics import Metrics
from pgcourier.runtime import running
from pgcourier.sealing import Keyring, generate_key
from pgcourier.secrets_at_rest import secure
from pgcourier.signing import verify
from tests.integration.console_helpers import csrf_for, login
from tests.integration.helpers import AUTH, TOKEN, Receiver, relay_settings, wait_until
from tests.integration.test_cli import pgcourier

WHSEC = "whsec_" + "c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldC1vbmU="
SLACK_TOKEN = "xoxb-3333-4444-endpoint-token"
K1, K2, K3 = generate_key(), generate_key(), generate_key()
MISMATCH = "PGCOURIER_SECRET_KEY does not open the stored secrets"


async def _snapshot(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT id, secret, previous_secret, slack_token, updated_at FROM courier.endpoints "
        "ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_a_writer_whose_key_does_not_open_the_stored_secrets_writes_nothing(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, aiohttp_client: Any
) -> None:
    hook = await ops.create_endpoint(
        conn, url=receiver.url("/a"), event_types=["*"], secret=WHSEC, keyring=Keyring(K1)
    )
    slack = await ops.create_endpoint(
        conn,
        kind="slack",
        slack_channel="#a",
        slack_token=SLACK_TOKEN,
        event_types=["x"],
        keyring=Keyring(K1),
    )
    before = await _snapshot(conn)
    wrong = Keyring(K3)

    # The library: every operation that writes a secret refuses before writing.
    for call in (
        ops.create_endpoint(conn, url=receiver.url("/b"), event_types=["*"], keyring=wrong),
        ops.rotate_secret(conn, hook["id"], keyring=wrong),
        ops.update_endpoint(conn, slack["id"], {"slack_token": SLACK_TOKEN + "x"}, keyring=wrong),
    ):
        with pytest.raises(ConfigurationError, match=MISMATCH):
            await call

    # The admin API and the console: a 503 saying so, never a 500.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        client = await aiohttp_client(
            create_app(AdminContext(pool, Metrics(), None, TOKEN, keyring=wrong))
        )
        for method, path, body in (
            ("POST", "/api/v1/endpoints", {"url": receiver.url("/c"), "event_types": ["*"]}),
            ("POST", f"/api/v1/endpoints/{hook['id']}/rotate-secret", {}),
            ("PATCH", f"/api/v1/endpoints/{slack['id']}", {"slack_token": SLACK_TOKEN + "y"}),
        ):
            response = await client.request(method, path, json=body, headers=AUTH)
            assert response.status == 503, (path, await response.text())
            error = (await response.json())["error"]
            assert error["code"] == "secret_key_mismatch"
            assert MISMATCH in error["message"]
            assert K3 not in json.dumps(error)
            assert K1 not in json.dumps(error)
        await login(client)
        page = await (await client.get(f"/ui/endpoints/{hook['id']}")).text()
        shown = await client.post(
            f"/ui/endpoints/{hook['id']}/rotate",
            data={"csrf_token": csrf_for(page, f"/ui/endpoints/{hook['id']}/rotate")},
        )
        assert shown.status == 503
        assert MISMATCH in await shown.text()
    finally:
        await pool.close()

    # The CLI: non-zero, one line, for endpoint writes and for a key rotation alike.
    for args in (
        ("endpoint", "add", "--url", receiver.url("/d"), "--event", "x"),
        ("endpoint", "rotate-secret", hook["id"]),
        ("keys", "rotate"),
    ):
        code, out, err = await pgcourier(*args, dsn=dsn, text=True, PGCOURIER_SECRET_KEY=K3)
        assert code == 1, (args, out, err)
        lines = [x for x in err.splitlines() if not x.startswith("{")]
        assert len(lines) == 1, err
        assert "does not open the stored secrets" in lines[0], err
        assert K3 not in err
        assert K1 not in err

    assert await _snapshot(conn) == before

    # A rolling deploy: a new first key before the old one opens what is stored, so it writes.
    code, out, err = await pgcourier(
        "endpoint",
        "add",
        "--url",
        receiver.url("/e"),
        "--event",
        "x",
        dsn=dsn,
        PGCOURIER_SECRET_KEY=f"{K2},{K1}",
    )
    assert code == 0, err
    stored = await conn.fetchval(
        "SELECT secret FROM courier.endpoints WHERE id = $1", json.loads(out)["id"]
    )
    assert Keyring(K2).under_first_key(stored)


async def test_the_start_up_check_and_the_writers_check_agree(conn: asyncpg.Connection) -> None:
    await ops.create_endpoint(
        conn, url="https://example.com/h", event_types=["*"], keyring=Keyring(K1)
    )
    with pytest.raises(ConfigurationError, match=MISMATCH):
        await secure(conn, Keyring(K3))


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """pgcourier's logs as the CLI sets them up (JSON) into a buffer."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


async def _ready(port: int | None) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/ready") as response,
    ):
        return response.status, await response.json()


async def test_a_relay_without_the_key_hands_the_work_back_and_says_it_is_not_ready(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, log_lines: io.StringIO
) -> None:
    good = await ops.create_endpoint(
        conn, url=receiver.url("/good"), event_types=["good"], keyring=Keyring(K1)
    )
    settings = relay_settings(dsn, secret_key=K1, circuit_failures=1, max_claims=2)
    async with running(settings, dsn) as rt:
        # A rolling deploy: a writer with a new first key (which also opens what is stored)
        # adds an endpoint after this relay, which has the old key only, started.
        bad = await ops.create_endpoint(
            conn, url=receiver.url("/bad"), event_types=["bad"], keyring=Keyring(f"{K2},{K1}")
        )
        for n in range(3):
            await ops.enqueue(conn, "bad", {"n": n})
        await ops.enqueue(conn, "good", {"n": 0})
        await receiver.wait_count(1, "/good")

        async def handed_back() -> list[asyncpg.Record]:
            rows = await conn.fetch(
                "SELECT due_at, claims, attempts, lease_token FROM courier.queue "
                "WHERE endpoint_id = $1 AND due_at > now() + interval '20 seconds' "
                "AND lease_token IS NULL ORDER BY id",
                bad["id"],
            )
            return rows if len(rows) == 3 else []

        await wait_until(handed_back)
        first = await handed_back()
        status, body = await _ready(rt.admin_port)
        assert status == 503
        [reason] = body["reasons"]
        assert "PGCOURIER_SECRET_KEY does not open" in reason
        for key in (K1, K2, good["secret"], bad["secret"]):
            assert key not in json.dumps(body)
        # Not claimed again in a loop (the poll is 0.2 s), and other endpoints keep flowing.
        await asyncio.sleep(1.5)
        await ops.enqueue(conn, "good", {"n": 1})
        await receiver.wait_count(2, "/good")
        assert await handed_back() == first
        assert all(r["claims"] == 0 and r["attempts"] == 0 for r in first)
        assert (await _ready(rt.admin_port))[0] == 503
    # No attempt recorded, nothing sent, the endpoint not blamed (circuit_failures=1 would
    # have opened its circuit at the first failed attempt).
    assert receiver.on("/bad") == []
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM courier.attempts WHERE endpoint_id = $1", bad["id"]
        )
        == 0
    )
    endpoint = await conn.fetchrow(
        "SELECT consecutive_failures, circuit_state, failing_since, enabled "
        "FROM courier.endpoints WHERE id = $1",
        bad["id"],
    )
    assert tuple(endpoint) == (0, "closed", None, True)
    # One error for the endpoint, not one per delivery nor per claim; no secret in it.
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    errors = [line for line in logged if line["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["endpoint_id"] == bad["id"]
    assert "does not open the endpoint's stored secret" in errors[0]["event"]
    for key in (K1, K2, bad["secret"]):
        assert key not in log_lines.getvalue()

    # A relay with the key sends them once they are due again (brought forward here).
    await conn.execute("UPDATE courier.queue SET due_at = now() WHERE endpoint_id = $1", bad["id"])
    async with running(relay_settings(dsn, secret_key=f"{K2},{K1}"), dsn):
        await receiver.wait_count(3, "/bad")
    for request in receiver.on("/bad"):
        verify("standard", request.headers, request.body, bad["secret"])
