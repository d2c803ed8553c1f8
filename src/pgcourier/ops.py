"""Operations shared by the CLI (and later the admin API): validate in Python, then one query.

Validation here gives the caller a precise message naming the field; the database enforces the
same rules again, so a bad row can never be written by any path.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from pgcourier import patterns
from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput, NotFound
from pgcourier.signing import generate_secret, secret_key


def validate_url(url: str) -> str:
    """An absolute http(s) URL with a host, or :class:`InvalidInput` naming ``url``."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidInput(f"{url!r} is not a valid URL: {exc}", field="url") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("the URL must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidInput("the URL has no host", field="url")
    if any(c.isspace() for c in url) or len(url) > 2048:
        raise InvalidInput("the URL must have no spaces and at most 2048 characters", field="url")
    return url


def parse_uuid(value: str, *, field: str = "id") -> UUID:
    """A UUID from text, or :class:`InvalidInput` naming the field."""
    try:
        return UUID(value)
    except ValueError as exc:
        raise InvalidInput(f"{value!r} is not a UUID", field=field) from exc


def plain(row: asyncpg.Record) -> dict[str, Any]:
    """A record as JSON-ready values: UUIDs as strings, times as ISO-8601."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


async def create_endpoint(
    conn: asyncpg.Connection,
    *,
    url: str,
    event_types: list[str],
    description: str = "",
    secret: str | None = None,
) -> dict[str, Any]:
    """Register an endpoint. The returned dict holds the secret: the only time it is shown."""
    validate_url(url)
    problems = patterns.validate_patterns(event_types)
    if problems:
        raise InvalidInput("; ".join(problems), field="event_types")
    if secret is None:
        secret = generate_secret()
    else:
        try:
            if len(secret_key(secret)) < 24:
                raise ValueError("it must hold at least 24 bytes")
        except ValueError as exc:
            raise InvalidInput(f"invalid secret: {exc}", field="secret") from exc
    with translate_errors():
        row = await conn.fetchrow(
            QUERIES["create_endpoint"], url, list(dict.fromkeys(event_types)), secret, description
        )
    assert row is not None
    return {**plain(row), "secret": secret}


async def list_endpoints(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every endpoint, oldest first, without secrets."""
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_endpoints"])
    return [plain(r) for r in rows]


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> dict[str, Any]:
    """One endpoint without its secret, or :class:`NotFound`."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_endpoint"], eid)
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    return plain(row)


async def set_endpoint_enabled(
    conn: asyncpg.Connection, endpoint_id: str, enabled: bool
) -> dict[str, Any]:
    """Enable or disable an endpoint; enabling wakes the relays for its held deliveries."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        async with conn.transaction():
            row = await conn.fetchrow(QUERIES["set_endpoint_enabled"], eid, enabled)
            if row is not None and enabled:
                await conn.execute(QUERIES["wake_relays"])
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    return plain(row)


async def enqueue(
    conn: asyncpg.Connection,
    event_type: str,
    payload: dict[str, Any] | str,
    *,
    ordering_key: str | None = None,
    idempotency_key: str | None = None,
) -> UUID:
    """``courier.enqueue`` from Python, in the caller's transaction if one is open."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with translate_errors():
        event_id: UUID = await conn.fetchval(
            QUERIES["enqueue"], event_type, text, ordering_key, idempotency_key
        )
    return event_id


async def list_dead(conn: asyncpg.Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    """Dead letters, newest first."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be between 1 and 10000", field="limit")
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_dead"], limit)
    return [plain(r) for r in rows]


async def replay_dead(conn: asyncpg.Connection, ids: list[int] | None) -> list[int]:
    """Queue dead deliveries again (all of them when ``ids`` is None); return the ids queued.

    The event keeps its id, so receivers see the same ``webhook-id`` and can deduplicate.
    Replaying a delivery that is no longer dead does nothing.
    """
    with translate_errors():
        async with conn.transaction():
            if ids is None:
                rows = await conn.fetch(QUERIES["replay_all_dead"])
            else:
                rows = await conn.fetch(QUERIES["replay_dead"], ids)
            if rows:
                await conn.execute(QUERIES["wake_relays"])
    return [r["id"] for r in rows]


def _event(row: asyncpg.Record) -> dict[str, Any]:
    return {**plain(row), "payload": json.loads(row["payload"])}


def parse_aware_time(text: str, *, field: str) -> datetime:
    """An ISO-8601 time that names its zone, or :class:`InvalidInput` naming ``field``."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} {text!r} is not an ISO-8601 time", field=field) from exc
    if value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone, e.g. {text}Z", field=field)
    return value


def encode_cursor(created_at: datetime, event_id: str) -> str:
    """An opaque page cursor: the last event's (created_at, id)."""
    raw = f"{created_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) in a cursor, or :class:`InvalidInput` naming ``cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, event_id = raw.partition("|")
        return datetime.fromisoformat(when), UUID(event_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


async def list_events(
    conn: asyncpg.Connection,
    *,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of events, newest first, with the cursor of the next page (None at the end)."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000", field="limit")
    if since and until and since >= until:
        raise InvalidInput("since must be earlier than until", field="since")
    after = decode_cursor(cursor) if cursor else (None, None)
    with translate_errors():
        rows = await conn.fetch(
            QUERIES["list_events"], event_type, since, until, after[0], after[1], limit + 1
        )
    page = rows[:limit]
    following = (
        encode_cursor(page[-1]["created_at"], str(page[-1]["id"])) if len(rows) > limit else None
    )
    return {"data": [_event(r) for r in page], "next_cursor": following}


async def _require_event(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record:
    eid = parse_uuid(event_id, field="event_id")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_event"], eid)
    if row is None:
        raise NotFound(f"no event {event_id}")
    return row


async def get_event(conn: asyncpg.Connection, event_id: str) -> dict[str, Any]:
    """One event with where it stands at each endpoint, or :class:`NotFound`."""
    row = await _require_event(conn, event_id)
    with translate_errors():
        deliveries = await conn.fetch(QUERIES["event_deliveries"], row["id"])
    return {**_event(row), "deliveries": [plain(d) for d in deliveries]}


async def event_attempts(conn: asyncpg.Connection, event_id: str) -> list[dict[str, Any]]:
    """Every attempt made for one event, oldest first (:class:`NotFound` if no such event)."""
    row = await _require_event(conn, event_id)
    with translate_errors():
        rows = await conn.fetch(QUERIES["event_attempts"], row["id"])
    return [plain(r) for r in rows]
