"""Migrations: forward-only, recorded, idempotent, safe to run concurrently."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcourier import db, ops
from pgcourier.errors import MigrationError
from pgcourier.patterns import matches
from pgcourier.runtime import running
from tests.integration.helpers import Receiver, relay_settings, wait_until


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
        assert {
            "outbox",
            "endpoints",
            "queue",
            "dead_letters",
            "delivery_history",
            "attempts",
            "relays",
            "migrations",
        } <= tables
        # Today's name for reading every delivery with its status is a view over the three.
        assert await conn.fetchval("SELECT to_regclass('courier.deliveries')") is not None
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
    # The fan-out matches with the patterns stored as LIKE patterns (0006): the same answer.
    as_like = await conn.fetchval(
        "SELECT $2 LIKE ANY (courier.like_patterns($1))", patterns, event_type
    )
    assert as_like is in_sql


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
        assert await db.migrate(conn) == [m.version for m in db.MIGRATIONS[4:]]
        with pytest.raises(asyncpg.InvalidParameterValueError, match="deeper than 64 levels"):
            await conn.execute("SELECT courier.enqueue('a.b', $1::jsonb)", deep)
        assert await conn.fetchval("SELECT payload::text FROM courier.outbox WHERE id = $1", old)
    finally:
        await conn.close()


async def test_0006_moves_open_deliveries_and_the_relay_finishes_them(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """A database at 0005 holding every kind of delivery upgrades to the split tables: pending
    and leased rows are queued (with their ids), dead ones are dead letters, finished ones stay
    readable history; then a relay delivers the open ones and a replay sends the dead one."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        with monkeypatch.context() as before:
            before.setattr(db, "MIGRATIONS", db.MIGRATIONS[:5])
            before.setattr(db, "LATEST_VERSION", 5)
            assert await db.migrate(conn) == [1, 2, 3, 4, 5]
        endpoint = await ops.create_endpoint(conn, url=receiver.url("/hook"), event_types=["*"])
        kinds = {
            # status, next attempt (or lease end), lease token, attempts
            "pending": ("pending", "now()", "NULL", 0),
            "leased": ("pending", "now() + interval '1 second'", "gen_random_uuid()", 1),
            "dead": ("dead", "now()", "NULL", 3),
            "delivered": ("delivered", "now()", "NULL", 1),
            "discarded": ("discarded", "now()", "NULL", 2),
        }
        ids: dict[str, int] = {}
        events: dict[str, uuid.UUID] = {}
        for kind, (status, due, lease, attempts) in kinds.items():
            event_id = events[kind] = await ops.enqueue(conn, f"old.{kind}", {"kind": kind})
            ids[kind] = await conn.fetchval(
                "INSERT INTO courier.deliveries (event_id, endpoint_id, status, next_attempt_at,"
                " lease_token, attempts, dead_at, delivered_at, discarded_at)"
                f" VALUES ($1, $2, $3, {due}, {lease}, $4,"
                "  CASE WHEN $3 IN ('dead', 'discarded') THEN now() END,"
                "  CASE WHEN $3 = 'delivered' THEN now() END,"
                "  CASE WHEN $3 = 'discarded' THEN now() END) RETURNING id",
                event_id,
                uuid.UUID(endpoint["id"]),
                status,
                attempts,
            )
        await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")

        assert await db.migrate(conn) == [m.version for m in db.MIGRATIONS[5:]]
        queued = {r["id"] for r in await conn.fetch("SELECT id FROM courier.queue")}
        assert queued == {ids["pending"], ids["leased"]}
        assert await conn.fetchval("SELECT id FROM courier.dead_letters") == ids["dead"]
        history = await conn.fetch("SELECT id, status FROM courier.delivery_history ORDER BY id")
        assert [(r["id"], r["status"]) for r in history] == [
            (ids["delivered"], "delivered"),
            (ids["discarded"], "discarded"),
        ]
        # Reads through the old name see every delivery with its status.
        view = dict(await conn.fetch("SELECT id, status FROM courier.deliveries"))
        assert view == {ids[k]: v[0] for k, v in kinds.items()}
        # New deliveries take ids after the old ones, in every table.
        await ops.enqueue(conn, "new.one", {})
        by_hand = await conn.fetchval(
            "INSERT INTO courier.delivery_history (event_id, endpoint_id, status)"
            " VALUES (gen_random_uuid(), gen_random_uuid(), 'delivered') RETURNING id"
        )
        assert by_hand > max(ids.values())
        await conn.execute("DELETE FROM courier.delivery_history WHERE id = $1", by_hand)

        async with running(relay_settings(empty_dsn), empty_dsn):
            # pending at once, leased when its lease (1 s) runs out, the new one at once.
            await receiver.wait_count(3, timeout=15)
            assert (await ops.replay_dead(conn, [ids["dead"]])) == [ids["dead"]]
            await receiver.wait_count(4, timeout=10)
            await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM courier.queue"))
        statuses = dict(await conn.fetch("SELECT id, status FROM courier.deliveries"))
        assert statuses.pop(ids["discarded"]) == "discarded"
        assert set(statuses.values()) == {"delivered"}
        assert len(statuses) == 5
        assert max(statuses) > max(ids.values())
        sent = sorted(r.json["data"].get("kind", "new") for r in receiver.requests)
        assert sent == ["dead", "leased", "new", "pending"]
        # The history from before the upgrade still reads as before.
        old = await ops.get_event(conn, str(events["delivered"]))
        assert [(d["id"], d["status"], d["attempts"]) for d in old["deliveries"]] == [
            (ids["delivered"], "delivered", 1)
        ]
    finally:
        await conn.close()
