"""An event's attempts, over the API and the CLI, come a page at a time: bounded by rows and by
the bytes of their response bodies, like every other listing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from pgcourier import ops
from tests.integration.helpers import AUTH, add_endpoint
from tests.integration.test_cli import pgcourier

MIB = 1024 * 1024


async def _attempts(conn: asyncpg.Connection, n: int, body: str) -> tuple[str, list[int]]:
    """An event with ``n`` recorded attempts whose response body is ``body``; their ids."""
    endpoint = await add_endpoint(conn, f"https://r.example/{uuid.uuid4()}")
    event_id = await ops.enqueue(conn, "a.b", {})
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    delivery = await conn.fetchval(
        "INSERT INTO courier.queue (event_id, endpoint_id, attempts)"
        " VALUES ($1, $2, $3) RETURNING id",
        event_id,
        uuid.UUID(endpoint["id"]),
        n,
    )
    ids = [
        await conn.fetchval(
            "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt, started_at,"
            " duration_ms, status_code, response_body, outcome)"
            " VALUES ($1, $2, $3, $4, now(), 1, 503, $5, 'retry') RETURNING id",
            delivery,
            event_id,
            uuid.UUID(endpoint["id"]),
            attempt,
            body,
        )
        for attempt in range(1, n + 1)
    ]
    return str(event_id), ids


async def _api_pages(api: Any, event_id: str, **query: str) -> list[list[int]]:
    pages: list[list[int]] = []
    params = dict(query)
    while True:
        response = await api.get(f"/api/v1/events/{event_id}/attempts", headers=AUTH, params=params)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert set(page) == {"data", "next_cursor"}
        pages.append([a["id"] for a in page["data"]])
        if page["next_cursor"] is None:
            return pages
        params["cursor"] = page["next_cursor"]
        assert len(pages) < 20, "the listing does not end"


async def _cli_pages(dsn: str, event_id: str, *options: str) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor: list[str] = []
    while True:
        code, out, err = await pgcourier("events", "attempts", event_id, *options, *cursor, dsn=dsn)
        assert code == 0, err
        page = json.loads(out)
        pages.append([a["id"] for a in page["data"]])
        if page["next_cursor"] is None:
            return pages
        cursor = ["--cursor", page["next_cursor"]]
        assert len(pages) < 20, "the listing does not end"


async def test_api_pages_attempts_by_rows(api: Any, conn: asyncpg.Connection) -> None:
    event_id, ids = await _attempts(conn, 7, "busy")
    assert await _api_pages(api, event_id, limit="3") == [ids[:3], ids[3:6], ids[6:]]
    assert await _api_pages(api, event_id) == [ids]


async def test_api_attempt_pages_stop_at_the_byte_budget(
    api: Any, conn: asyncpg.Connection
) -> None:
    # Five 1 MiB bodies: the default 4 MiB budget is reached after four, well before the limit.
    event_id, ids = await _attempts(conn, 5, "x" * MIB)
    assert ops.PAGE_BYTES == 4 * MIB
    assert await _api_pages(api, event_id, limit="100") == [ids[:4], ids[4:]]


async def test_api_refuses_bad_attempt_paging_naming_the_field(
    api: Any, conn: asyncpg.Connection
) -> None:
    event_id, _ = await _attempts(conn, 1, "")
    for query, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "lots"}, "limit"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"limt": "5"}, "limt"),
        ({"type": "a.b"}, "type"),
    ):
        response = await api.get(f"/api/v1/events/{event_id}/attempts", headers=AUTH, params=query)
        assert response.status == 422, query
        assert (await response.json())["error"]["field"] == field
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await api.get(f"/api/v1/events/{missing}/attempts", headers=AUTH)).status == 404


async def test_cli_pages_attempts_by_rows_and_bytes(conn: asyncpg.Connection, dsn: str) -> None:
    event_id, ids = await _attempts(conn, 5, "y")
    assert await _cli_pages(dsn, event_id, "--limit", "2") == [ids[:2], ids[2:4], ids[4:]]
    event_id, ids = await _attempts(conn, 5, "z" * MIB)
    assert await _cli_pages(dsn, event_id) == [ids[:4], ids[4:]]


async def test_cli_refuses_bad_attempt_paging_in_one_line(
    conn: asyncpg.Connection, dsn: str
) -> None:
    event_id, _ = await _attempts(conn, 1, "")
    for options, message in (
        (["--limit", "0"], "limit must be between"),
        (["--cursor", "bm9wZQ"], "cursor is not one this server issued"),
    ):
        code, out, err = await pgcourier("events", "attempts", event_id, *options, dsn=dsn)
        assert code == 1
        assert out == ""
        [line] = [x for x in err.splitlines() if not x.startswith("{")]
        assert message in line
