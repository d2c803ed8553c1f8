"""Payloads nested too deep for readers, and memory bounds on listings and bulk operations."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.errors import InvalidInput
from tests.integration.helpers import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def nested(depth: int, *, array: bool = False) -> str:
    """A JSON object ``depth`` containers deep (the outer object counts as 1): the inner ones
    are arrays or objects."""
    inner = "[1]" if array else '{"v": 1}'
    opening, closing = ("[", "]") if array else ('{"a": ', "}")
    return '{"a": ' + opening * (depth - 2) + inner + closing * (depth - 2) + "}"


@pytest.mark.parametrize("array", [False, True], ids=["objects", "arrays"])
async def test_payloads_deeper_than_64_levels_are_refused_on_every_path(
    conn: asyncpg.Connection, array: bool
) -> None:
    assert json.loads(nested(64, array=array))  # the helper builds what it says
    await ops.enqueue(conn, "deep.ok", nested(64, array=array))
    await conn.execute(
        "INSERT INTO courier.outbox (event_type, payload) VALUES ('deep.ok', $1::jsonb)",
        nested(64, array=array),
    )
    for statement in (
        "SELECT courier.enqueue('deep.no', $1::jsonb)",
        "INSERT INTO courier.outbox (event_type, payload) VALUES ('deep.no', $1::jsonb)",
    ):
        with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
            await conn.execute(statement, nested(65, array=array))
        assert refused.value.args[0] == "courier: payload nested deeper than 64 levels"
    with pytest.raises(InvalidInput, match="nested deeper than 64 levels") as caught:
        await ops.enqueue(conn, "deep.no", nested(3000, array=array))
    assert caught.value.field == "payload"
    counts = await conn.fetch("SELECT event_type, count(*) FROM courier.outbox GROUP BY 1")
    assert {r["event_type"]: r["count"] for r in counts} == {"deep.ok": 2}


async def _store_unchecked(conn: asyncpg.Connection, event_type: str, payload: str) -> uuid.UUID:
    """Store a row as a database from before the depth cap may hold one."""
    async with conn.transaction():
        # As a replica, this session fires no triggers: the depth check is skipped.
        await conn.execute("SET LOCAL session_replication_role = replica")
        event_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO courier.outbox (event_type, payload) VALUES ($1, $2::jsonb) RETURNING id",
            event_type,
            payload,
        )
    return event_id


async def test_events_stored_before_the_cap_are_shown_as_their_json_text(
    conn: asyncpg.Connection, api: Any
) -> None:
    """Python's parser stops near 1,000 levels: such a payload is passed on as its stored JSON
    text (a string) with ``payload_as_text``, and every view of it still answers."""
    deep = nested(3000)
    deep_id = await _store_unchecked(conn, "deep.old", deep)
    plain_id = await ops.enqueue(conn, "flat.new", {"n": 1})
    endpoint = await ops.create_endpoint(conn, url="https://r.example/h", event_types=["*"])
    dead_id = await conn.fetchval(
        "INSERT INTO courier.deliveries (event_id, endpoint_id, status, dead_at) "
        "VALUES ($1, $2, 'dead', now()) RETURNING id",
        deep_id,
        uuid.UUID(endpoint["id"]),
    )

    listed = {e["id"]: e for e in (await ops.list_events(conn))["data"]}
    shown = await ops.get_event(conn, str(deep_id))
    dead = await ops.get_dead(conn, dead_id)
    for view in (listed[str(deep_id)], shown, dead):
        assert view["payload_as_text"] is True
        assert isinstance(view["payload"], str)
        assert view["payload"].replace(" ", "") == deep.replace(" ", "")
    assert listed[str(plain_id)]["payload"] == {"n": 1}
    assert "payload_as_text" not in listed[str(plain_id)]

    for path in ("/api/v1/events", f"/api/v1/events/{deep_id}", f"/api/v1/dead-letters/{dead_id}"):
        response = await api.get(path, headers=AUTH)
        assert response.status == 200, (path, await response.text())
