"""Dead-letter operations: list, show, discard and replay."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput
from pgcourier.ops.events import event_record
from pgcourier.ops.paging import (
    BATCH_SIZE,
    MAX_ID,
    PAGE_BYTES,
    batches,
    check_limit,
    decode_dead_cursor,
    encode_cursor,
    fetch_page,
)
from pgcourier.ops.retention import dead_letter_not_found
from pgcourier.ops.retrying import retried
from pgcourier.ops.tenants import validate_tenant
from pgcourier.ops.validation import parse_uuid, plain, validate_event_type


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters a listing or a bulk replay covers (None: any)."""

    endpoint_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The event's tenant.
    tenant: str | None = None

    def args(self) -> tuple[UUID | None, str | None, datetime | None, datetime | None]:
        """The filter as the queries' first four parameters, validated (the tenant is
        validated here too; the queries take it after their other parameters)."""
        validate_tenant(self.tenant)
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be earlier than until", field="since")
        eid = (
            None if self.endpoint_id is None else parse_uuid(self.endpoint_id, field="endpoint_id")
        )
        if self.event_type is not None:
            validate_event_type(self.event_type, field="event_type")
        return eid, self.event_type, self.since, self.until


async def list_dead(
    conn: asyncpg.Connection,
    where: DeadFilter | None = None,
    *,
    cursor: str | None = None,
    limit: int = 100,
    max_bytes: int = PAGE_BYTES,
) -> dict[str, Any]:
    """A page of dead letters, newest first, with the cursor of the next page (None at the end);
    the page ends early once its errors and URLs hold ``max_bytes``."""
    check_limit(limit)
    after = decode_dead_cursor(cursor) if cursor else (None, None)
    where = where or DeadFilter()
    with translate_errors():
        page, more = await fetch_page(
            conn,
            # A tenant's dead letters by their own index (0013): see list_tenant_dead.
            QUERIES["list_dead" if where.tenant is None else "list_tenant_dead"],
            *where.args(),
            *after,
            limit + 1,
            where.tenant,
            limit=limit,
            max_bytes=max_bytes,
            size=lambda row: len(row["last_error"] or "") + len(row["url"] or ""),
        )
    following = encode_cursor(page[-1]["dead_at"], str(page[-1]["id"])) if more else None
    return {"data": [plain(r) for r in page], "next_cursor": following}


def _dead_id(value: str | int) -> int:
    text = str(value)
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > MAX_ID:
        raise InvalidInput(f"{text!r} is not a dead-letter id", field="id")
    return int(text)


async def get_dead(conn: asyncpg.Connection, dead_id: str | int) -> dict[str, Any]:
    """One dead letter with its event, or :class:`NotFound`."""
    did = _dead_id(dead_id)
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_dead"], did)
    if row is None:
        raise await dead_letter_not_found(conn, did)
    return event_record(row)


async def discard_dead(conn: asyncpg.Connection, dead_id: str | int) -> int:
    """Throw a dead letter away for good (recorded as discarded), or :class:`NotFound`."""
    did = _dead_id(dead_id)
    row = await retried(conn, lambda: conn.fetchval(QUERIES["discard_dead"], [did]))
    if row is None:
        raise await dead_letter_not_found(conn, did)
    return did


async def matching_dead_ids(conn: asyncpg.Connection, where: DeadFilter) -> list[int]:
    """The ids of every dead letter ``where`` matches, in id order (a tenant's read through
    dead_letters_tenant: the cost is that tenant's dead letters)."""
    args = where.args()
    with translate_errors():
        if where.tenant is None:
            rows = await conn.fetch(QUERIES["matching_dead_ids"], *args, None)
        else:
            rows = await conn.fetch(QUERIES["matching_tenant_dead_ids"], *args, where.tenant)
    return [r["id"] for r in rows]


async def replay_dead(
    conn: asyncpg.Connection,
    ids: list[int] | None,
    where: DeadFilter | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[int]:
    """Queue dead deliveries again: the given ids, or else every one matching ``where``
    (all when None); return the ids queued.

    The event keeps its id, so receivers see the same ``webhook-id`` and can deduplicate.
    Replaying a delivery that is no longer dead does nothing, so replaying twice queues once.
    The deliveries are queued ``batch_size`` at a time, each batch its own statement and
    transaction (a savepoint inside the caller's), so a replay of millions holds no lock on them
    all at once; relays are woken after each batch and start on it while the next is queued.
    """
    with translate_errors():
        if ids is None:
            where = where or DeadFilter()
            ids = await matching_dead_ids(conn, where)
        queued: list[int] = []
    for batch in batches(ids, batch_size):
        rows = await retried(conn, functools.partial(_replay_batch, conn, batch))
        queued.extend(r["id"] for r in rows)
    return queued


async def _replay_batch(conn: asyncpg.Connection, batch: list[int]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES["replay_dead"], batch)
    if rows:
        await conn.execute(QUERIES["wake_relays"])
    return rows


async def discard_many(
    conn: asyncpg.Connection,
    ids: list[int] | None,
    where: DeadFilter | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[int]:
    """Throw dead letters away for good (recorded as discarded): the given ids, or else every
    one matching ``where`` (all when None); return the ids discarded, in order. One no longer
    dead is left alone.

    The same statement as :func:`discard_dead`, ``batch_size`` ids at a time, each batch its
    own statement and transaction (a savepoint inside the caller's), as :func:`replay_dead`.
    """
    if ids is None:
        ids = await matching_dead_ids(conn, where or DeadFilter())
    discarded: list[int] = []
    for batch in batches(ids, batch_size):
        rows = await retried(conn, functools.partial(conn.fetch, QUERIES["discard_dead"], batch))
        discarded.extend(r["id"] for r in rows)
    return sorted(discarded)
