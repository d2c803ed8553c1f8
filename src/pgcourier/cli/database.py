"""The database a command works on, and the wrapper that runs one operation on it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import structlog

from pgcourier import db, pools
from pgcourier.cli.output import output
from pgcourier.embedded import EmbeddedPostgres
from pgcourier.sealing import Keyring
from pgcourier.settings import Settings

log = structlog.get_logger("pgcourier.cli")

Command = Callable[[argparse.Namespace, Settings], int]
Action = Callable[[argparse.Namespace, asyncpg.Connection], Awaitable[Any]]
# An action that stores or re-encrypts secrets: it also gets PGCOURIER_SECRET_KEY's keys.
KeyedAction = Callable[[argparse.Namespace, asyncpg.Connection, Keyring | None], Awaitable[Any]]


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The DSN to use: PGCOURIER_DATABASE_URL, or an embedded Postgres in PGCOURIER_DATA_DIR."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir.resolve())
    dsn = embedded.start()
    log.info("embedded Postgres ready", dsn=dsn, data_dir=str(embedded.data_dir))
    try:
        yield dsn
    finally:
        embedded.stop()


async def _with_conn(
    settings: Settings, dsn: str, action: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    async with pools.connection(dsn) as conn:
        if settings.auto_migrate:
            with db.translate_errors():
                await db.migrate(conn)
        else:
            with db.translate_errors():
                await db.require_schema(conn)
        return await action(conn)


def db_command(action: Action) -> Command:
    """A command that runs ``action`` on one connection and prints what it returns."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        with database(settings) as dsn:
            result = asyncio.run(_with_conn(settings, dsn, lambda conn: action(args, conn)))
        if result is not None:
            output(args, result)
        return 0

    return command


def keyed_db_command(action: KeyedAction) -> Command:
    """As :func:`db_command`, for an action that also needs the keys (None when unset)."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        keyring = settings.keyring
        with database(settings) as dsn:
            result = asyncio.run(
                _with_conn(settings, dsn, lambda conn: action(args, conn, keyring))
            )
        if result is not None:
            output(args, result)
        return 0

    return command
