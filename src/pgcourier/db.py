"""Storage plumbing: named queries, migrations, and error translation.

Everything that knows about asyncpg's exception types lives here; callers see
:mod:`pgcourier.errors` instead. How sessions are opened and pooled is :mod:`pgcourier.pools`;
the bundled server is :mod:`pgcourier.embedded`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import asyncpg

from pgcourier.errors import (
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    MigrationError,
    PgCourierError,
)

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


async def require_schema(conn: asyncpg.Connection) -> int:
    """The schema's version, or a ConfigurationError when it is older than this code.

    For everything that runs without migrating (``AUTO_MIGRATE=false``): code of this version
    calls functions and reads columns an older schema lacks, and would fail on them one
    statement at a time (a relay would keep running, degraded). A newer schema passes: the
    upgrade order is migrate first, then replace the processes, so older code meets a newer
    schema for the length of every rolling deploy (the caller may warn).
    """
    version = await schema_version(conn)
    if version < LATEST_VERSION:
        raise ConfigurationError(
            f"the courier schema is at version {version}, this pgcourier needs "
            f"{LATEST_VERSION}: run `pgcourier migrate`"
        )
    return version


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
