"""Event operations: enqueue, list, show, and the attempts made for one event (a page at a time:
each attempt may hold a response body of up to 1 MiB)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput
from pgcourier.ops.paging import (
    PAGE_BYTES,
    check_limit,
    decode_cursor,
    decode_id_cursor,
    encode_cursor,
    encode_id_cursor,
    fetch_page,
)
from pgcourier.ops.retention import event_not_found
from pgcourier.ops.tenants import validate_tenant
from pgcourier.ops.validation import parse_uuid, plain, validate_event_type


async def enqueue(
    conn: asyncpg.Connection,
    event_type: str,
    payload: dict[str, Any] | str,
    *,
    ordering_key: str | None = None,
    idempotency_key: str | None = None,
    tenant: str | None = None,
    endpoint_id: str | UUID | None = None,
) -> UUID:
    """``courier.enqueue`` from Python, in the caller's transaction if one is open.

    ``tenant``: only that tenant's endpoints (and those without a tenant) receive the event.
    ``endpoint_id``: only that endpoint receives it, whatever its patterns; it must exist, and a
    tenant given too must be its tenant (else :class:`InvalidInput`, and nothing is written).
    """
    text = payload if isinstance(payload, str) else json.dumps(payload)
    validate_tenant(tenant)
    target = endpoint_id
    if isinstance(target, str):
        target = parse_uuid(target, field="endpoint_id")
    with translate_errors():
        event_id: UUID = await conn.fetchval(
            QUERIES["enqueue"], event_type, text, ordering_key, idempotency_key, tenant, target
        )
    return event_id


def event_record(row: asyncpg.Record) -> dict[str, Any]:
    """A row holding ``payload`` (JSON text) as JSON-ready values, the payload parsed.

    Rows stored before migration 0005 capped nesting at 64 levels may be nested deeper than
    Python's parser (or json.dumps in the adapters) can follow; such a payload is passed on as its
    stored JSON text, a string, flagged with ``payload_as_text`` so that a client can tell it from
    a payload that is a string, and every view of the event keeps working.
    """
    out = plain(row)
    try:
        out["payload"] = json.loads(row["payload"])
    except RecursionError:
        out["payload_as_text"] = True
    return out


async def list_events(
    conn: asyncpg.Connection,
    *,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
    max_bytes: int = PAGE_BYTES,
    tenant: str | None = None,
) -> dict[str, Any]:
    """A page of events, newest first, with the cursor of the next page (None at the end);
    only ``tenant``'s events when given.

    The page ends early once its payloads hold ``max_bytes`` (see :data:`PAGE_BYTES`).
    """
    check_limit(limit)
    validate_tenant(tenant)
    if event_type is not None:
        validate_event_type(event_type, field="type")
    if since and until and since >= until:
        raise InvalidInput("since must be earlier than until", field="since")
    after = decode_cursor(cursor) if cursor else (None, None)
    with translate_errors():
        page, more = await fetch_page(
            conn,
            QUERIES["list_events" if tenant is None else "list_tenant_events"],
            event_type,
            since,
            until,
            after[0],
            after[1],
            limit + 1,
            *(() if tenant is None else (tenant,)),
            limit=limit,
            max_bytes=max_bytes,
            size=lambda row: len(row["payload"]),
        )
    following = encode_cursor(page[-1]["created_at"], str(page[-1]["id"])) if more else None
    return {"data": [event_record(r) for r in page], "next_cursor": following}


async def _require_event(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record:
    eid = parse_uuid(event_id, field="event_id")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_event"], eid)
    if row is None:
        raise await event_not_found(conn, event_id)
    return row


async def get_event(conn: asyncpg.Connection, event_id: str) -> dict[str, Any]:
    """One event with where it stands at each endpoint, or :class:`NotFound`."""
    row = await _require_event(conn, event_id)
    with translate_errors():
        deliveries = await conn.fetch(QUERIES["event_deliveries"], row["id"])
    return {**event_record(row), "deliveries": [plain(d) for d in deliveries]}


def _attempt_size(row: asyncpg.Record) -> int:
    return len(row["response_body"] or "") + len(row["error"] or "")


async def list_attempts(
    conn: asyncpg.Connection,
    event_id: str,
    *,
    cursor: str | None = None,
    limit: int = 100,
    max_bytes: int = PAGE_BYTES,
) -> dict[str, Any]:
    """A page of the attempts made for one event, oldest first, with the cursor of the next
    page (None at the end); the page ends early once its response bodies and errors hold
    ``max_bytes``. :class:`NotFound` if no such event."""
    check_limit(limit)
    after = decode_id_cursor(cursor) if cursor else None
    row = await _require_event(conn, event_id)
    with translate_errors():
        page, more = await fetch_page(
            conn,
            QUERIES["event_attempts"],
            row["id"],
            after,
            limit + 1,
            limit=limit,
            max_bytes=max_bytes,
            size=_attempt_size,
        )
    following = encode_id_cursor(page[-1]["id"]) if more else None
    # Each attempt says whether its event was a test send (see ops.test_sends).
    return {"data": [{**plain(r), "test": row["test"]} for r in page], "next_cursor": following}
