"""Operations shared by the CLI (and later the admin API): validate in Python, then one query.

Validation here gives the caller a precise message naming the field; the database enforces the
same rules again, so a bad row can never be written by any path.
"""

from __future__ import annotations

import json
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


def _endpoint(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "created_at": row["created_at"].isoformat(),
    }


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
    return {**_endpoint(row), "secret": secret}


async def list_endpoints(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every endpoint, oldest first, without secrets."""
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_endpoints"])
    return [_endpoint(r) for r in rows]


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> dict[str, Any]:
    """One endpoint without its secret, or :class:`NotFound`."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_endpoint"], eid)
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    return _endpoint(row)


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
    return _endpoint(row)


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
    return [
        {
            "id": r["id"],
            "event_id": str(r["event_id"]),
            "event_type": r["event_type"],
            "endpoint_id": str(r["endpoint_id"]),
            "url": r["url"],
            "attempts": r["attempts"],
            "last_status_code": r["last_status_code"],
            "last_error": r["last_error"],
            "dead_at": r["dead_at"].isoformat() if r["dead_at"] else None,
        }
        for r in rows
    ]


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
