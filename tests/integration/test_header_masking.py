"""Custom header values carry receivers' credentials: shown like secrets, sent for real."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.errors import InvalidInput
from tests.integration.helpers import TOKEN, Receiver, wait_until
from tests.integration.test_cli import pgcourier

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MASK = ops.HEADER_MASK
CREDENTIALS = {"Authorization": "Bearer s3cret-token", "X-Team": "core"}


async def stored_headers(conn: asyncpg.Connection, endpoint_id: str) -> Any:
    return json.loads(
        await conn.fetchval(
            "SELECT headers::text FROM courier.endpoints WHERE id = $1::uuid", endpoint_id
        )
    )


async def test_values_show_only_in_the_reply_to_the_request_that_set_them(
    conn: asyncpg.Connection,
) -> None:
    created = await ops.create_endpoint(
        conn, url="https://r.example/h", event_types=["*"], headers=dict(CREDENTIALS)
    )
    assert created["headers"] == CREDENTIALS  # the caller just sent them, as with the secret
    eid = created["id"]
    masked = {"Authorization": MASK, "X-Team": MASK}
    assert (await ops.get_endpoint(conn, eid))["headers"] == masked
    assert [e["headers"] for e in await ops.list_endpoints(conn)] == [masked]
    assert (await ops.set_endpoint_enabled(conn, eid, False))["headers"] == masked
    assert (await ops.rotate_secret(conn, eid))["headers"] == masked
    assert await stored_headers(conn, eid) == CREDENTIALS  # an unrelated change kept them

    # Sending back what was read keeps the stored value; new values replace, missing ones go.
    changed = await ops.update_endpoint(
        conn, eid, {"headers": {"Authorization": MASK, "X-Region": "eu"}}
    )
    assert changed["headers"] == {"Authorization": MASK, "X-Region": "eu"}
    assert await stored_headers(conn, eid) == {
        "Authorization": "Bearer s3cret-token",
        "X-Region": "eu",
    }
    await ops.update_endpoint(conn, eid, {"headers": {"Authorization": "Bearer new"}})
    assert await stored_headers(conn, eid) == {"Authorization": "Bearer new"}

    # The mask is never stored as a value.
    with pytest.raises(InvalidInput, match="no stored value") as refused:
        await ops.update_endpoint(conn, eid, {"headers": {"X-Other": MASK}})
    assert refused.value.field == "headers"
    with pytest.raises(InvalidInput, match="no stored value"):
        await ops.create_endpoint(
            conn, url="https://r.example/h", event_types=["*"], headers={"X-A": MASK}
        )
    assert await stored_headers(conn, eid) == {"Authorization": "Bearer new"}


async def test_api_and_cli_never_show_stored_values(
    conn: asyncpg.Connection, api: Any, dsn: str
) -> None:
    created = await ops.create_endpoint(
        conn, url="https://r.example/h", event_types=["*"], headers=dict(CREDENTIALS)
    )
    for path in ("/api/v1/endpoints", f"/api/v1/endpoints/{created['id']}"):
        response = await api.get(path, headers=AUTH)
        body = await response.text()
        assert response.status == 200, body
        assert "s3cret" not in body
        assert MASK in body
    for args in (("endpoint", "list"), ("endpoint", "show", created["id"])):
        code, out, err = await pgcourier(*args, dsn=dsn)
        assert code == 0, err
        assert "s3cret" not in out
        assert MASK in out


async def test_the_relay_sends_the_real_values_after_a_masked_round_trip(
    conn: asyncpg.Connection, api: Any, receiver: Receiver, relay: Any
) -> None:
    created = await ops.create_endpoint(
        conn, url=receiver.url("/h"), event_types=["*"], headers=dict(CREDENTIALS)
    )
    path = f"/api/v1/endpoints/{created['id']}"
    shown = await (await api.get(path, headers=AUTH)).json()
    # A client that edits one field and sends the headers back as it read them.
    response = await api.patch(
        path, headers=AUTH, json={"description": "edited", "headers": shown["headers"]}
    )
    assert response.status == 200, await response.text()
    await ops.enqueue(conn, "a.b", {})
    async with relay():
        await receiver.wait_count(1)
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = 1 FROM courier.attempts"), timeout=5
        )
    [request] = receiver.requests
    assert request.headers["Authorization"] == "Bearer s3cret-token"
    assert request.headers["X-Team"] == "core"
