"""Going idle in one round trip (migration 0020): courier.claim_going_idle through PgStore.go_idle.

The relay's side of the idle protocol (the flag, the wait for producers' commits, the row held
by another transaction) is in test_relay_row.py; these check what the one statement does
beside it: claim only when the producers it may have missed were waited for, read the next due
time when the claim took nothing, and leave the claim the session's own lock waits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.store import PgStore

IDLE = "SELECT idle FROM courier.relays WHERE id = $1"
LEASED = "SELECT count(*) FROM courier.queue WHERE lease_token IS NOT NULL"


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    store = PgStore(pool, idle_settle=0.05)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


async def _endpoint(conn: asyncpg.Connection, **options: object) -> str:
    endpoint = await ops.create_endpoint(
        conn, url="http://127.0.0.1:1/x", event_types=["*"], **options
    )
    return str(endpoint["id"])


async def test_going_idle_flags_the_relay_and_claims_what_is_due(conn, store) -> None:
    await _endpoint(conn)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    relay = uuid.uuid4()
    turn = await store.go_idle(relay, limit=10, lease=60)
    assert (turn.written, turn.claimed) == (True, True)
    assert [job.event_type for job in turn.jobs] == ["order.paid"]
    assert turn.next_due is None  # the claim took something: not read
    assert await conn.fetchval(IDLE, relay) is True
    assert await conn.fetchval("SELECT lease_token FROM courier.queue") == relay


async def test_going_idle_with_nothing_to_claim_reads_the_next_due_time(conn, store) -> None:
    await _endpoint(conn)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    [held] = await store.claim(uuid.uuid4(), limit=10, lease=600)  # another relay's, for long
    turn = await store.go_idle(uuid.uuid4(), limit=10, lease=60)
    assert (turn.written, turn.claimed, turn.jobs) == (True, True, [])
    expected = await store.next_due()
    assert expected is not None
    assert turn.next_due == expected
    assert held.attempt == 1


async def test_going_idle_claims_nothing_unless_it_waited_for_producers(
    conn, dsn: str, store
) -> None:
    """A transaction holds the producers' lock past IDLE_SETTLE_TIMEOUT: a producer that read
    the flag busy may commit after a claim in that statement, unannounced. So that statement
    claims nothing (the relay claims in one of its own, after the flag is committed), and
    neither does the next going idle, which does not wait for a while."""
    await _endpoint(conn)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    relay = uuid.uuid4()
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock_shared(courier.producers_lock())")
            turn = await store.go_idle(relay, limit=10, lease=60)
            assert (turn.written, turn.claimed, turn.jobs) == (True, False, [])
            assert await conn.fetchval(LEASED) == 0
            assert await conn.fetchval(IDLE, relay) is True
        turn = await store.go_idle(relay, limit=10, lease=60)
        assert (turn.written, turn.claimed, turn.jobs) == (True, False, [])
        assert await conn.fetchval(LEASED) == 0
    finally:
        await holder.close()
    [job] = await store.claim(relay, limit=10, lease=60)
    assert job.event_type == "order.paid"


async def test_going_idle_writes_and_claims_nothing_while_its_busy_row_is_held(
    conn, dsn: str, store
) -> None:
    await _endpoint(conn)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    relay = uuid.uuid4()
    await conn.execute(
        "INSERT INTO courier.relays (id, hostname, pid, idle) VALUES ($1, 'h', 1, false)", relay
    )
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM courier.relays WHERE id = $1 FOR UPDATE", relay)
            turn = await store.go_idle(relay, limit=10, lease=60)
            assert (turn.written, turn.claimed, turn.jobs) == (False, False, [])
            assert await conn.fetchval(LEASED) == 0
    finally:
        await holder.close()
    assert await conn.fetchval(IDLE, relay) is False


async def test_the_claim_in_going_idle_waits_for_locks_as_any_claim(conn, dsn: str, store) -> None:
    """courier.relay_idle bounds its own waits with a lock_timeout for the whole transaction
    (50 ms for the producers, 10 ms for the row): the claim after it in the same statement
    must wait as a claim does, not fail after 50 ms. A rate-limited endpoint's claim writes its
    tokens into the endpoint's row, which another transaction holds here for 300 ms."""
    endpoint = await _endpoint(conn, rate_limit=100.0)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM courier.endpoints WHERE id = $1 FOR UPDATE", uuid.UUID(endpoint)
            )
            going = asyncio.create_task(store.go_idle(uuid.uuid4(), limit=10, lease=60))
            await asyncio.sleep(0.3)
            assert not going.done()
        turn = await asyncio.wait_for(going, 5)
    finally:
        await holder.close()
    assert (turn.written, turn.claimed) == (True, True)
    assert [job.event_type for job in turn.jobs] == ["order.paid"]
