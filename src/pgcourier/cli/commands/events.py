"""``pgcourier enqueue`` and ``pgcourier events ...``: add events and inspect them."""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from pgcourier import ops


async def enqueue(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    # The catalog's schema for this type, when one is registered (as POST /api/v1/events).
    await ops.check_payload(conn, args.event_type, json.loads(args.payload))
    event_id = await ops.enqueue(
        conn,
        args.event_type,
        args.payload,
        ordering_key=args.ordering_key,
        idempotency_key=args.idempotency_key,
        tenant=args.tenant,
        endpoint_id=args.endpoint,
    )
    return {"id": str(event_id)}


async def events_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_events(
        conn,
        event_type=args.type,
        since=args.since,
        until=args.until,
        cursor=args.cursor,
        limit=args.limit,
        tenant=args.tenant,
    )


async def events_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_event(conn, args.id)


async def events_attempts(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_attempts(conn, args.id, cursor=args.cursor, limit=args.limit)
