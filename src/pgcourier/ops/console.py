"""Read operations the operator console needs beyond the API's.

Overview numbers, per-minute attempt counts for charts, live relays, an endpoint's recent
attempts, and counting the dead letters a filter matches (discarding them is
:func:`pgcourier.ops.dead_letters.discard_many`, the API's discard in batches). Like every
operation, each validates its input first (an :class:`InvalidInput` naming the field) and then
runs named queries; the console's pages are thin adapters over these and the other ``ops`` modules.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput
from pgcourier.ops.dead_letters import DeadFilter, _dead_id
from pgcourier.ops.endpoints import get_endpoint, list_endpoints
from pgcourier.ops.paging import check_limit, decode_dead_cursor, encode_cursor
from pgcourier.ops.validation import parse_uuid, plain

# Longest chart the console draws: a day of minutes.
MAX_CHART_MINUTES = 24 * 60
# How much of a receiver's answer a listing shows (the attempt log keeps up to
# PGCOURIER_RESPONSE_BODY_LIMIT bytes; the event page shows all of it).
BODY_PREVIEW = 300


async def minutes(
    conn: asyncpg.Connection, *, span: int = 60, endpoint_id: str | None = None
) -> list[dict[str, Any]]:
    """Attempts per minute over the last ``span`` minutes (this one included) by outcome
    (``delivered``, ``retried``, ``dead``), oldest first; minutes without attempts are left out.
    """
    if not 1 <= span <= MAX_CHART_MINUTES:
        raise InvalidInput(f"span must be between 1 and {MAX_CHART_MINUTES} minutes", field="span")
    eid = None if endpoint_id is None else parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        rows = await conn.fetch(QUERIES["console_minutes"], span, eid)
    return [dict(r) for r in rows]


async def live_relays(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The relays alive now (from their heartbeats), oldest first."""
    with translate_errors():
        rows = await conn.fetch(QUERIES["console_relays"])
    return [plain(r) for r in rows]


async def overview(conn: asyncpg.Connection) -> dict[str, Any]:
    """What the overview page shows besides the chart: the queue's gauges (the same query as
    /metrics), the endpoints that need a look (disabled, circuit not closed, paused) and the
    live relays."""
    with translate_errors():
        gauges = await conn.fetchrow(QUERIES["delivery_gauges"])
    assert gauges is not None
    endpoints = await list_endpoints(conn)
    return {
        "pending": gauges["pending"],
        "oldest_pending_age": gauges["oldest_pending_age"],
        "dead": gauges["dead"],
        "open_circuits": [e for e in endpoints if e["circuit_state"] != "closed"],
        "disabled": [e for e in endpoints if not e["enabled"]],
        "paused": [e for e in endpoints if e["paused_until"] is not None],
        "endpoint_count": len(endpoints),
        "relays": await live_relays(conn),
    }


async def endpoint_attempts(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    cursor: str | None = None,
    limit: int = 50,
    preview: int = BODY_PREVIEW,
) -> dict[str, Any]:
    """A page of an endpoint's attempts, newest first, each response body cut to ``preview``
    characters, with the cursor of the next page (None at the end)."""
    check_limit(limit)
    endpoint = await get_endpoint(conn, endpoint_id)
    after = decode_dead_cursor(cursor) if cursor else (None, None)
    with translate_errors():
        rows = await conn.fetch(
            QUERIES["console_endpoint_attempts"], endpoint["id"], *after, limit + 1, preview
        )
    page = rows[:limit]
    following = (
        encode_cursor(page[-1]["started_at"], str(page[-1]["id"])) if len(rows) > limit else None
    )
    return {"data": [plain(r) for r in page], "next_cursor": following}


async def count_dead(conn: asyncpg.Connection, where: DeadFilter | None = None) -> int:
    """How many dead letters ``where`` matches (all when None)."""
    where = where or DeadFilter()
    with translate_errors():
        # A tenant's dead letters by their own index (0013).
        query = "console_count_dead" if where.tenant is None else "console_count_tenant_dead"
        count: int = await conn.fetchval(QUERIES[query], *where.args(), where.tenant)
    return count


def dead_ids(values: list[str]) -> list[int]:
    """Dead-letter ids as sent by a form, or :class:`InvalidInput` naming ``id``."""
    if not values:
        raise InvalidInput("select at least one dead letter", field="id")
    return sorted({_dead_id(v) for v in values})
