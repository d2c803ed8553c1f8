"""The server under test and the relay's own session settings, on every supported version.

CI runs the integration suite on each Postgres it has (embedded 18, the 16 wheel, Debian 15);
see tests/conftest.py for how a run picks its server.
"""

from __future__ import annotations

import os

import asyncpg

from pgcourier import pools

OLDEST_SUPPORTED = 14


async def test_the_server_is_a_supported_version(conn: asyncpg.Connection) -> None:
    version = int(await conn.fetchval("SHOW server_version_num"))
    assert version >= OLDEST_SUPPORTED * 10_000
    wanted = os.environ.get("PGCOURIER_TEST_POSTGRES")
    if wanted and not os.environ.get("PGCOURIER_TEST_DATABASE_URL"):
        # The switch picked a wheel: make sure the run is on the version it claims.
        assert version // 10_000 == int(wanted)


async def test_relay_sessions_run_without_jit(dsn: str) -> None:
    """A safeguard for servers with JIT (issue 10): the relay's statements never gain from it."""
    pool = await pools.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as session:
            assert await session.fetchval("SHOW jit") == "off"
            # No planner switches: the plans hold by the schema's shape (test_plans.py).
            assert await session.fetchval("SHOW enable_seqscan") == "on"
    finally:
        await pool.close()
