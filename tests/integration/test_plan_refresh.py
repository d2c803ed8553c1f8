"""A relay session does not keep plans made while its tables were nearly empty (issue 10).

Postgres caches a plan per prepared statement and per statement inside a PL/pgSQL function, and
after five executions keeps one generic plan, costed for the tables as they were then, until
an ANALYZE, a VACUUM or DDL invalidates it. Made while the queue and the outbox were empty, it
scans them sequentially; on a server without autovacuum nothing invalidates it, and the claim
kept scanning both tables once per claimed row while they grew (measured: a core burnt and the
relay seconds behind at 2,000 events/s). The relay's sessions drop their plans every
``plan_lifetime`` seconds (pgcourier.pools.PlanRefresh). These tests count the sequential scans of
the two tables (pg_stat_user_tables) made by claims once the tables have grown.
"""

from __future__ import annotations

import asyncio
import math
import uuid

import asyncpg

from pgcourier import ops, pools
from pgcourier.store import PgStore

LIFETIME = 0.3
GROWN = 5_000  # events, each with one delivery: hundreds of pages


async def _seq_scans(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT relname, seq_scan FROM pg_stat_user_tables"
        " WHERE schemaname = 'courier' AND relname IN ('outbox', 'queue')"
    )
    return {r["relname"]: r["seq_scan"] for r in rows}


async def _flush_stats(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Make the table counters of the pool's session and of ``conn`` visible to ``conn``."""
    if conn.get_server_version().major >= 15:
        # Flushed when each session next goes idle, i.e. once this statement is done. Both:
        # ``conn`` runs the fan-out of the grown tables (two sequential scans, rightly: it reads
        # every row), and a session flushes at most once a second unless forced, so on a slow
        # machine those two landed between the before and after counts (seen in CI on 15).
        await pool.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_force_next_flush()")
    else:  # pragma: no cover - Postgres 14's collector reports within 500 ms
        await asyncio.sleep(1.5)
    await conn.execute("SELECT pg_stat_clear_snapshot()")


async def _scans_by_claims_after_growth(dsn: str, conn: asyncpg.Connection, lifetime: float) -> int:
    # As on a server without autovacuum (the Debian one here): nothing but us analyzes these.
    for table in ("outbox", "queue"):
        await conn.execute(f"ALTER TABLE courier.{table} SET (autovacuum_enabled = false)")
        await conn.execute(f"ANALYZE courier.{table}")  # statistics of the empty tables
    await ops.create_endpoint(
        conn, url="http://127.0.0.1:9/hook", event_types=["*"], max_in_flight=1000
    )
    relay = uuid.uuid4()
    pool = await pools.create_pool(dsn, min_size=1, max_size=1, plan_lifetime=lifetime)
    try:
        store = PgStore(pool)
        await store.register(relay)
        # Empty tables: the session's claims plan for them, and settle on a generic plan.
        for _ in range(12):
            await conn.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
            await store.claim(relay, 64, 60.0)
        # The tables grow, their statistics untouched.
        await conn.execute(
            "SELECT courier.enqueue('order.paid', jsonb_build_object('i', i, 'pad', repeat('x',"
            " 200))) FROM generate_series(1, $1) AS i",
            GROWN,
        )
        await conn.execute("SELECT courier.fan_out($1)", GROWN)
        if math.isfinite(lifetime):
            await asyncio.sleep(lifetime * 1.5)
        await pool.execute("SELECT 1")  # released: plans past their lifetime are dropped
        await _flush_stats(pool, conn)
        before = await _seq_scans(conn)
        claimed = 0
        for _ in range(5):
            claimed += len(await store.claim(relay, 64, 60.0))
        assert claimed == 5 * 64  # the claims did their work
        await _flush_stats(pool, conn)
        after = await _seq_scans(conn)
        return sum(after.values()) - sum(before.values())
    finally:
        await pool.close()


async def test_claims_stop_scanning_tables_that_grew_once_plans_expire(
    dsn: str, conn: asyncpg.Connection
) -> None:
    assert await _scans_by_claims_after_growth(dsn, conn, LIFETIME) == 0


async def test_without_expiry_plans_of_the_empty_tables_scan_them(
    dsn: str, conn: asyncpg.Connection
) -> None:
    # The control: what the test above guards against happens when plans never expire, so a
    # zero there is the refresh's doing (and not, say, a server that never went generic).
    assert await _scans_by_claims_after_growth(dsn, conn, math.inf) > 0


async def test_a_session_drops_its_plans_at_most_once_per_lifetime(dsn: str) -> None:
    """DISCARD PLANS is one extra round trip: never on every release."""
    pool = await pools.create_pool(dsn, min_size=1, max_size=1, plan_lifetime=LIFETIME)
    try:
        async with pool.acquire() as c:
            pid = c.get_server_pid()
        seen: list[str] = []

        async with pool.acquire() as c:
            c.add_query_logger(lambda q: seen.append(q.query))
        for _ in range(50):
            await pool.execute("SELECT 1")
        assert seen.count("DISCARD PLANS") == 0
        await asyncio.sleep(LIFETIME * 1.2)
        for _ in range(50):
            await pool.execute("SELECT 1")
        assert seen.count("DISCARD PLANS") == 1
        async with pool.acquire() as c:
            assert c.get_server_pid() == pid  # the same session, not a reconnect
    finally:
        await pool.close()
