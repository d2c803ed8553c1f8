"""``pgcourier endpoint ...``: register, change, inspect and remove endpoints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from pgcourier import ops
from pgcourier.errors import InvalidInput
from pgcourier.ops.test_sends import holding
from pgcourier.sealing import Keyring


async def endpoint_add(
    args: argparse.Namespace, conn: asyncpg.Connection, keyring: Keyring | None
) -> Any:
    return await ops.create_endpoint(
        conn,
        url=args.url,
        event_types=args.event,
        description=args.description,
        secret=args.secret,
        enabled=not args.disabled,
        timeout_seconds=args.timeout,
        headers=dict(args.header),
        signature_scheme=args.scheme,
        permanent_statuses=args.permanent_status,
        max_in_flight=args.max_in_flight,
        rate_limit=args.rate_limit,
        kind="slack" if args.slack_channel else "webhook",
        slack_channel=args.slack_channel,
        slack_token=args.slack_token,
        template=args.template,
        tenant=args.tenant,
        keyring=keyring,
    )


async def endpoint_update(
    args: argparse.Namespace, conn: asyncpg.Connection, keyring: Keyring | None
) -> Any:
    changes: dict[str, Any] = {}
    for name in ("url", "description", "enabled"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.event is not None:
        changes["event_types"] = args.event
    if args.timeout is not None:
        changes["timeout_seconds"] = None if args.timeout == "default" else args.timeout
    if args.clear_headers or args.header:
        changes["headers"] = dict(args.header or [])
    if args.scheme is not None:
        changes["signature_scheme"] = args.scheme
    if args.clear_permanent_statuses or args.permanent_status:
        changes["permanent_statuses"] = args.permanent_status or []
    if args.max_in_flight is not None:
        changes["max_in_flight"] = args.max_in_flight
    if args.rate_limit is not None:
        changes["rate_limit"] = None if args.rate_limit == "none" else args.rate_limit
    for name in ("slack_channel", "slack_token", "template", "tenant"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name) or None  # --template '' clears it (--tenant too)
    if not changes:
        raise InvalidInput("nothing to change: give at least one option (see --help)")
    return await ops.update_endpoint(conn, args.id, changes, keyring=keyring)


async def endpoint_rotate(
    args: argparse.Namespace, conn: asyncpg.Connection, keyring: Keyring | None
) -> Any:
    return await ops.rotate_secret(
        conn, args.id, secret=args.secret, grace_seconds=args.grace, keyring=keyring
    )


async def endpoint_delete(
    args: argparse.Namespace, conn: asyncpg.Connection, keyring: Keyring | None
) -> Any:
    discarded = await ops.delete_endpoint(conn, args.id, keyring=keyring)
    return {"deleted": args.id, "discarded": discarded}


async def endpoint_stats(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.endpoint_stats(conn, args.id, window_seconds=args.window)


async def endpoint_recover(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    queued = await ops.recover_endpoint(conn, args.id, since=args.since)
    return {"recovered": queued, "count": len(queued)}


async def endpoint_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_endpoints(conn, tenant=args.tenant)


async def endpoint_test(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    sent = await ops.send_test(holding(conn), args.id, event_type=args.type, wait_seconds=args.wait)
    if sent["attempt"] is None:
        # Not an error of the caller's: the event is queued. Said on stderr, the result printed.
        print(f"pgcourier: {sent['message']}", file=sys.stderr)
    return sent


async def endpoint_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_endpoint(conn, args.id)


async def endpoint_enable(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.set_endpoint_enabled(conn, args.id, True)


async def endpoint_disable(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.set_endpoint_enabled(conn, args.id, False)
