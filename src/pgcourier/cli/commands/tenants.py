"""``pgcourier tenant ...``: per-tenant views."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgcourier import ops


async def tenant_stats(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.tenant_stats(conn, args.name, window_seconds=args.window)
