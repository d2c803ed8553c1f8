"""Page sizes, byte budgets, batches and opaque keyset cursors shared by the listings and the
bulk operations."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier.errors import InvalidInput

MAX_PAGE = 1000
# A page stops growing once its rows hold this much text (payloads, response bodies): at the
# largest page and payload sizes a page would otherwise be 1000 x 256 KiB in the server's
# memory, then again as JSON. A page always holds at least one row, so the listing advances.
PAGE_BYTES = 4 * 1024 * 1024
# Rows read from the database per round trip while a page fills: bounds what is held beyond the
# budget to this many rows.
FETCH_CHUNK = 32
# Rows a bulk operation changes per statement and transaction: locks are held, and WAL written,
# for one batch at a time, and relays start on the first batch while later ones are queued.
BATCH_SIZE = 1000


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")


MAX_ID = 2**63 - 1


def encode_cursor(created_at: datetime, event_id: str) -> str:
    """An opaque page cursor: the last event's (created_at, id)."""
    raw = f"{created_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, key = raw.partition("|")
        return datetime.fromisoformat(when), key
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) in an events cursor, or :class:`InvalidInput` naming ``cursor``."""
    when, key = _decode(cursor)
    try:
        return when, UUID(key)
    except ValueError as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def decode_dead_cursor(cursor: str) -> tuple[datetime, int]:
    when, key = _decode(cursor)
    if not re.fullmatch(r"[0-9]{1,19}", key) or int(key) > MAX_ID:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return when, int(key)


def encode_id_cursor(last_id: int) -> str:
    """An opaque page cursor for listings in id order."""
    return base64.urlsafe_b64encode(f"id|{last_id}".encode()).decode().rstrip("=")


def decode_id_cursor(cursor: str) -> int:
    """The id in a cursor from :func:`encode_id_cursor`, or :class:`InvalidInput`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc
    kind, _, key = raw.partition("|")
    if kind != "id" or not re.fullmatch(r"[0-9]{1,19}", key) or int(key) > MAX_ID:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return int(key)


async def fetch_page(
    conn: asyncpg.Connection,
    query: str,
    *args: Any,
    limit: int,
    max_bytes: int,
    size: Callable[[asyncpg.Record], int],
) -> tuple[list[asyncpg.Record], bool]:
    """Up to ``limit`` rows of ``query``, fewer once they hold ``max_bytes`` by ``size`` (at least
    one), and whether more rows follow. ``query`` should stop at ``limit + 1`` rows.

    Rows come through a server-side cursor, :data:`FETCH_CHUNK` at a time, so the rows a page
    leaves out are never built: neither here nor, for a plan that streams, in the server.
    """
    page: list[asyncpg.Record] = []
    used = 0
    async with conn.transaction():  # a cursor lives in a transaction (a savepoint if nested)
        cursor = await conn.cursor(query, *args)
        while True:
            chunk = await cursor.fetch(FETCH_CHUNK)
            for row in chunk:
                if len(page) >= limit or (page and used >= max_bytes):
                    return page, True
                page.append(row)
                used += size(row)
            if len(chunk) < FETCH_CHUNK:
                return page, False


def batches(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    """``ids`` in consecutive lists of at most ``size``."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
