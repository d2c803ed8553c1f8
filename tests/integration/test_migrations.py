"""Migrations: forward-only, recorded, idempotent, safe to run concurrently."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcourier import db
from pgcourier.errors import MigrationError
from pgcourier.patterns import matches


async def test_migrate_builds_the_schema_and_records_it(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await db.schema_version(conn) == 0
        assert await db.migrate(conn) == [m.version for m in db.MIGRATIONS]
        assert await db.schema_version(conn) == db.LATEST_VERSION
        assert await db.migrate(conn) == []  # idempotent
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='courier'")
        }
        assert {"outbox", "endpoints", "deliveries", "attempts", "relays", "migrations"} <= tables
        assert await conn.fetchval("SELECT to_regclass('courier.dead_letters')") is not None
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_migration_once(empty_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(db.MIGRATIONS)]
        assert await conns[0].fetchval("SELECT count(*) FROM courier.migrations") == len(
            db.MIGRATIONS
        )
    finally:
        for c in conns:
            await c.close()


async def test_a_changed_migration_is_refused(conn, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = dataclasses.replace(db.MIGRATIONS[0], sql=db.MIGRATIONS[0].sql + "\n-- edited")
    monkeypatch.setattr(db, "MIGRATIONS", [changed, *db.MIGRATIONS[1:]])
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await db.migrate(conn)


async def test_a_newer_database_is_refused(conn) -> None:
    await conn.execute(
        "INSERT INTO courier.migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
    )
    with pytest.raises(MigrationError, match="version 9999, newer than this pgcourier"):
        await db.migrate(conn)


async def test_attempts_are_append_only(conn) -> None:
    await conn.execute(
        "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt, started_at,"
        " duration_ms, outcome) VALUES (1, gen_random_uuid(), gen_random_uuid(), 1, now(), 1,"
        " 'delivered')"
    )
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute("UPDATE courier.attempts SET status_code = 200")


event_types = st.from_regex(r"[a-z_]{1,3}(\.[a-z_]{1,3}){0,2}", fullmatch=True)
pattern_lists = st.lists(
    st.from_regex(r"(\*|[a-z_]{1,3})(\.(\*|[a-z_]{1,3})){0,2}", fullmatch=True),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(patterns=pattern_lists, event_type=event_types)
async def test_sql_and_python_pattern_matching_agree(conn, patterns, event_type) -> None:
    in_sql = await conn.fetchval("SELECT courier.event_type_matches($1, $2)", patterns, event_type)
    assert in_sql is matches(patterns, event_type)


async def test_0005_upgrades_a_database_holding_deep_events(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The depth cap applies to new rows only: events stored before it stay, and stay readable."""
    deep = '{"a": ' * 100 + "1" + "}" * 100
    conn = await asyncpg.connect(empty_dsn)
    try:
        with monkeypatch.context() as before:
            before.setattr(db, "MIGRATIONS", db.MIGRATIONS[:4])
            before.setattr(db, "LATEST_VERSION", 4)
            assert await db.migrate(conn) == [1, 2, 3, 4]
        old = await conn.fetchval("SELECT courier.enqueue('a.b', $1::jsonb)", deep)
        assert await db.migrate(conn) == [5]
        with pytest.raises(asyncpg.InvalidParameterValueError, match="deeper than 64 levels"):
            await conn.execute("SELECT courier.enqueue('a.b', $1::jsonb)", deep)
        assert await conn.fetchval("SELECT payload::text FROM courier.outbox WHERE id = $1", old)
    finally:
        await conn.close()
