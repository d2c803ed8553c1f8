"""Every attempt made for one event, for tests that look at all of them: the operations only
list them a page at a time (:func:`pgcourier.ops.list_attempts`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from pgcourier import ops


async def all_attempts(conn: asyncpg.Connection, event_id: str) -> list[dict[str, Any]]:
    """The event's attempts, oldest first, read page by page."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await ops.list_attempts(conn, event_id, cursor=cursor, limit=ops.MAX_PAGE)
        rows += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
