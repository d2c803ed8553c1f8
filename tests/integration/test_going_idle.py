"""Going idle in one round trip (migration 0020): courier.claim_going_idle through PgStore.go_idle.

The relay's side of the idle protocol (the flag, the wait for producers' commits, the row held
by another transaction) is in test_relay_row.py; these check what the one statement does
beside it: claim only when the producers it may have missed were waited for, read the next due
time when the claim took nothing, and never hold the producers' lock through a lock wait.
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


async def test_going_idle_never_holds_the_producers_lock_through_a_lock_wait(
    conn, dsn: str, store
) -> None:
    """The claim in going idle runs under the producers' lock, which other relays going idle
    wait for: it waits for no other lock for long (relay_idle's row wait, 10 ms). Here another
    transaction holds a rate-limited endpoint's row, which the claim writes (its tokens): going
    idle gives the claim up, undone (no lease, no fan-out), and says so; the relay's own claim
    then waits as any claim does."""
    endpoint = await _endpoint(conn, rate_limit=100.0)
    await ops.enqueue(conn, "order.paid", {"n": 1})
    relay = uuid.uuid4()
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute(
                "SELECT 1 FROM courier.endpoints WHERE id = $1 FOR UPDATE", uuid.UUID(endpoint)
            )
            turn = await asyncio.wait_for(store.go_idle(relay, limit=10, lease=60), 1)
            assert (turn.written, turn.claimed, turn.jobs) == (True, False, [])
            assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 0
            assert await conn.fetchval(IDLE, relay) is True
            async with conn.transaction():  # a producer's try of the lock, now: free
                assert await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock_shared(courier.producers_lock())"
                )
            claiming = asyncio.create_task(store.claim(relay, limit=10, lease=60))
            await asyncio.sleep(0.3)
            assert not claiming.done()
        jobs = await asyncio.wait_for(claiming, 5)
    finally:
        await holder.close()
    assert [job.event_type for job in jobs] == ["order.paid"]
