"""``pgcourier dlq ...``: list, show, replay and discard dead letters."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgcourier import ops
from pgcourier.errors import InvalidInput


def _dead_filter(args: argparse.Namespace) -> ops.DeadFilter:
    return ops.DeadFilter(
        endpoint_id=args.endpoint,
        event_type=args.type,
        since=args.since,
        until=args.until,
        tenant=args.tenant,
    )


async def dlq_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    page = await ops.list_dead(conn, _dead_filter(args), cursor=args.cursor, limit=args.limit)
    return page if args.json else page["data"]


async def dlq_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_dead(conn, args.id)


async def dlq_discard(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return {"discarded": [await ops.discard_dead(conn, i) for i in args.ids]}


async def dlq_replay(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    where = _dead_filter(args)
    if args.ids and (args.all or where != ops.DeadFilter()):
        raise InvalidInput("give either dead-letter ids or --all with filters, not both")
    if not args.ids and not args.all:
        raise InvalidInput("give dead-letter ids, or --all (optionally with filters)")
    queued = await ops.replay_dead(conn, args.ids or None, where)
    return {"replayed": queued, "count": len(queued)}
