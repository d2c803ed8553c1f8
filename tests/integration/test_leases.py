"""Leases: a relay keeps what it holds for as long as it works on it, so that a slow delivery
is never taken by a second relay and sent twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from pgcourier import ops, pools
from pgcourier.delivery import WebhookTransport, new_session
from pgcourier.relay import Relay, RelayConfig
from pgcourier.store import PgStore
from tests.integration.attempts import all_attempts
from tests.integration.helpers import Receiver, add_endpoint, relay_settings, wait_until


@contextlib.asynccontextmanager
async def bare_relays(dsn: str, n: int, **config: Any) -> AsyncIterator[list[Relay]]:
    """``n`` relays on the test database, built as the runtime builds them except for the
    request timeout: the runtime caps it at half the lease, and this test needs a request that
    outlasts the lease (as a delivery queued behind others, or a slow completion write, does)."""
    pool = await pools.create_pool(dsn, min_size=2, max_size=8)
    session = new_session(max_in_flight=4, allowed_networks=relay_settings(dsn).allowed_networks)
    stop = asyncio.Event()
    relays = [
        Relay(
            store=PgStore(pool),
            transport=WebhookTransport(session, timeout=30.0, response_body_limit=0),
            config=RelayConfig(max_in_flight=4, retry_jitter=0.0, **config),
        )
        for _ in range(n)
    ]
    try:
        async with asyncio.TaskGroup() as group:
            for relay in relays:
                group.create_task(relay.run(stop))
            try:
                yield relays
            finally:
                stop.set()
    finally:
        await session.close()
        await pool.close()


async def _delivered(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval("SELECT bool_and(status = 'delivered') FROM courier.deliveries")
    )


async def test_a_receiver_slower_than_the_lease_gets_one_attempt_from_two_relays(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    lease = 1.0
    await add_endpoint(conn, receiver.url("/slow"))
    receiver.delay["/slow"] = 2.5 * lease
    event_id = await ops.enqueue(conn, "a.b", {})
    # The second relay polls every 50 ms: were the lease not renewed, it would take the delivery
    # about one lease after the first relay did and send it again while the first still waits.
    async with bare_relays(dsn, 2, lease=lease, poll_interval=0.05) as relays:
        await receiver.wait_count(1, timeout=5)
        await wait_until(lambda: _delivered(conn), timeout=10)
    # Counted once the relays have stopped: a relay counts a delivery after its write commits,
    # so right after the row reads delivered its count may not have moved yet (seen on a busy
    # machine).
    assert sum(r.delivered for r in relays) == 1
    assert len(receiver.requests) == 1
    attempts = await all_attempts(conn, str(event_id))
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "delivered")]
