"""Payloads nested too deep for readers, and memory bounds on listings and bulk operations."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.errors import InvalidInput
from tests.integration.attempts import all_attempts
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
        "INSERT INTO courier.dead_letters (event_id, endpoint_id, dead_at) "
        "VALUES ($1, $2, now()) RETURNING id",
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


async def _dead_letters(conn: asyncpg.Connection, n: int, *, error: str = "HTTP 500") -> list[int]:
    """n events, each with a dead delivery (made by hand, no relay needed)."""
    endpoint = await ops.create_endpoint(conn, url="https://r.example/h", event_types=["*"])
    ids = []
    for i in range(n):
        event_id = await ops.enqueue(conn, "a.b", {"i": i})
        ids.append(
            await conn.fetchval(
                "INSERT INTO courier.dead_letters (event_id, endpoint_id, attempts, dead_at,"
                " last_attempt_at, last_error) VALUES ($1, $2, 3, now(), now(), $3)"
                " RETURNING id",
                event_id,
                uuid.UUID(endpoint["id"]),
                error,
            )
        )
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    return ids


def flat(pages: list[list[Any]]) -> list[Any]:
    return [row for page in pages for row in page]


async def _walk(fetch: Any) -> list[list[Any]]:
    """Every page of a listing, following next_cursor, as lists of ids."""
    pages: list[list[Any]] = []
    cursor = None
    while True:
        page = await fetch(cursor)
        pages.append([row["id"] for row in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the listing does not end"


async def test_event_pages_stop_at_a_byte_budget(conn: asyncpg.Connection) -> None:
    ids = [str(await ops.enqueue(conn, "a.b", {"blob": "x" * 990})) for _ in range(5)]
    sizes = await conn.fetch("SELECT octet_length(payload::text) AS n FROM courier.outbox")
    assert {r["n"] for r in sizes} == {1002}
    # Rows are added while the page holds less than the budget: 3 x 1002 >= 2500.
    pages = await _walk(lambda c: ops.list_events(conn, cursor=c, max_bytes=2500))
    assert [len(p) for p in pages] == [3, 2]
    assert flat(pages) == ids[::-1]
    # A payload over the budget still makes a page of its own: the listing always advances.
    pages = await _walk(lambda c: ops.list_events(conn, cursor=c, max_bytes=10))
    assert pages == [[i] for i in ids[::-1]]
    # The row limit still applies beside the budget, and the default budget fits all five.
    assert [len(p) for p in await _walk(lambda c: ops.list_events(conn, cursor=c, limit=4))] == [
        4,
        1,
    ]
    assert ops.PAGE_BYTES == 4 * 1024 * 1024


async def test_attempt_pages_stop_at_a_byte_budget(conn: asyncpg.Connection) -> None:
    [dead] = await _dead_letters(conn, 1)
    event_id, endpoint_id = await conn.fetchrow(
        "SELECT event_id, endpoint_id FROM courier.deliveries WHERE id = $1", dead
    )
    for attempt in range(1, 6):
        await conn.execute(
            "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt, started_at,"
            " duration_ms, status_code, response_body, outcome)"
            " VALUES ($1, $2, $3, $4, now(), 1, 500, $5, 'retry')",
            dead,
            event_id,
            endpoint_id,
            attempt,
            "e" * 1000,
        )
    every = [a["id"] for a in await all_attempts(conn, str(event_id))]
    assert len(every) == 5
    by_bytes = await _walk(
        lambda c: ops.list_attempts(conn, str(event_id), cursor=c, max_bytes=2500)
    )
    assert [len(p) for p in by_bytes] == [3, 2]
    assert flat(by_bytes) == every
    by_rows = await _walk(lambda c: ops.list_attempts(conn, str(event_id), cursor=c, limit=2))
    assert [len(p) for p in by_rows] == [2, 2, 1]
    with pytest.raises(InvalidInput) as refused:
        await ops.list_attempts(conn, str(event_id), cursor="bm9wZQ")
    assert refused.value.field == "cursor"


async def test_dead_letter_pages_stop_at_a_byte_budget(conn: asyncpg.Connection) -> None:
    ids = await _dead_letters(conn, 4, error="E" * 1000)
    url = len("https://r.example/h")
    pages = await _walk(lambda c: ops.list_dead(conn, cursor=c, max_bytes=2 * (1000 + url)))
    assert [len(p) for p in pages] == [2, 2]
    assert sorted(flat(pages)) == ids


async def _batches_used(conn: asyncpg.Connection, ids: list[int]) -> int:
    """How many transactions wrote these rows last: each batch commits on its own."""
    count: int = await conn.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM courier.queue WHERE id = ANY($1)", ids
    )
    return count


async def test_bulk_replay_runs_in_batches_and_still_queues_once(conn: asyncpg.Connection) -> None:
    ids = await _dead_letters(conn, 5)
    queued = await ops.replay_dead(conn, None, ops.DeadFilter(), batch_size=2)
    assert sorted(queued) == ids
    assert await _batches_used(conn, ids) == 3
    assert await ops.replay_dead(conn, None, batch_size=2) == []
    assert (
        await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE status = 'pending'") == 5
    )

    # Given ids are batched the same way; ones no longer dead are left out.
    await conn.execute(
        "WITH m AS (DELETE FROM courier.queue RETURNING *) INSERT INTO courier.dead_letters"
        " (id, event_id, endpoint_id, attempts, schedule_base, created_at)"
        " SELECT id, event_id, endpoint_id, attempts, schedule_base, created_at FROM m"
    )
    queued = await ops.replay_dead(conn, [*ids, *ids], batch_size=4)
    assert sorted(queued) == ids
    assert await _batches_used(conn, ids) == 2


async def test_recover_runs_in_batches(conn: asyncpg.Connection) -> None:
    ids = await _dead_letters(conn, 5)
    endpoint_id = str(await conn.fetchval("SELECT endpoint_id FROM courier.deliveries LIMIT 1"))
    since = await conn.fetchval("SELECT now() - interval '1 hour'")
    recovered = await ops.recover_endpoint(conn, endpoint_id, since=since, batch_size=2)
    assert sorted(recovered) == ids
    assert await _batches_used(conn, ids) == 3
    rows = await conn.fetch("SELECT status, schedule_base FROM courier.deliveries")
    assert {tuple(r) for r in rows} == {("pending", 3)}
    assert await ops.recover_endpoint(conn, endpoint_id, since=since, batch_size=2) == []
