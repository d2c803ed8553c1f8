"""The relay rides out database outages: every connection dropped, connections refused."""

from __future__ import annotations

import asyncio

import asyncpg

from pgcourier import ops
from tests.integration.helpers import Receiver, add_endpoint, wait_until


async def drop_all_connections(admin: asyncpg.Connection, dbname: str) -> int:
    return await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        dbname,
    )


async def test_relay_recovers_when_the_database_drops_everything_and_refuses_for_a_while(
    conn, dsn: str, server_dsn: str, receiver: Receiver, relay
) -> None:
    """What a relay sees of a Postgres restart: all its connections die at once, new ones are
    refused for a while, then the server is back. Nothing may be lost."""
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.delay["/hook"] = 0.5
    before = {str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(5)}
    dbname = await conn.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(server_dsn)
    async with relay(retry_schedule="200ms,200ms,200ms,200ms,200ms") as rt:
        await receiver.wait_count(1)  # requests are in flight
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        try:
            # The pool, the LISTEN connection, and this test's own connection all go.
            assert await drop_all_connections(admin, dbname) >= 3
            await asyncio.sleep(1.5)
            assert not rt.listener.connected
        finally:
            await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
            await admin.close()
        conn = await asyncpg.connect(dsn)
        after = {str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(5, 10)}
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 10 FROM courier.deliveries WHERE status = 'delivered'"
            ),
            timeout=20,
        )
        await wait_until(lambda: rt.listener.connected)
    try:
        assert set(receiver.ids()) == before | after
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM courier.attempts") == 10
    finally:
        await conn.close()
