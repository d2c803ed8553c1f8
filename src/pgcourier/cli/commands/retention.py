"""``pgcourier prune``: one retention pass now (issue 12)."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgcourier import ops
from pgcourier.cli.database import db_command
from pgcourier.settings import Settings


async def _prune(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.prune(
        conn,
        retention=args.retention,
        dead_retention=args.dead_retention,
        dry_run=args.dry_run,
    )


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Prune with the relay's settings (PGCOURIER_RETENTION, PGCOURIER_DEAD_RETENTION)."""
    args.retention = settings.retention
    args.dead_retention = settings.dead_retention
    return db_command(_prune)(args, settings)
