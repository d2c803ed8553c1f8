"""A key that does not open the stored secrets (issue 12, part 3): writers refuse to write under
it, and a relay that meets such a secret hands the work back instead of failing it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.errors import ConfigurationError
from pgcourier.metrics import Metrics
from pgcourier.sealing import Keyring, generate_key
from pgcourier.secrets_at_rest import secure
from tests.integration.console_helpers import csrf_for, login
from tests.integration.helpers import AUTH, TOKEN, Receiver
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
