"""courier.claim called by several relays at the same moment, and beside other transactions'
row locks: what each of its locks guarantees (see the comments in migration 0004)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcourier import ops

# Max claims 1000: the rounds below hand leases back by hand, never recording an attempt, and
# must not meet the poison bound (tests/integration/test_poison.py).
CLAIM = "SELECT id, endpoint_id FROM courier.claim($1, 60, $2, $3, 1000)"


async def _endpoint(conn: asyncpg.Connection, path: str, **options: Any) -> uuid.UUID:
    created = await ops.create_endpoint(
        conn, url=f"http://127.0.0.1:1{path}", event_types=["*"], **options
    )
    return uuid.UUID(str(created["id"]))


@pytest.fixture
async def relays_conns(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Four connections, one per simulated relay."""
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        yield conns
    finally:
        for c in conns:
            await c.close()


async def test_simultaneous_claims_never_exceed_an_endpoints_limits(
    conn: asyncpg.Connection, relays_conns: list[asyncpg.Connection]
) -> None:
    # Three endpoints whose limits are counted at claim time, under the endpoint's advisory lock:
    # concurrency (2 in flight), a circuit due for its one probe, a rate limit (a bucket of 3).
    limited = await _endpoint(conn, "/limited", max_in_flight=2)
    probed = await _endpoint(conn, "/probed")
    metered = await _endpoint(conn, "/metered", rate_limit=3)
    for i in range(20):
        await ops.enqueue(conn, "a.b", {"i": i})
    await conn.fetch(CLAIM, 0, uuid.uuid4(), 1000)  # fan out only: 20 deliveries per endpoint
    for c in relays_conns:  # warm up: prepared statements, so that the rounds start together
        await c.fetch(CLAIM, 0, uuid.uuid4(), 0)
    barrier = asyncio.Barrier(len(relays_conns))

    async def claim(c: asyncpg.Connection) -> list[asyncpg.Record]:
        await barrier.wait()
        return list(await c.fetch(CLAIM, 10, uuid.uuid4(), 0))

    over: list[dict[str, int]] = []
    for _ in range(40):
        # Every lease handed back, the circuit open and due for a probe, the bucket full.
        await conn.execute("UPDATE courier.queue SET lease_token = NULL, due_at = now()")
        await conn.execute(
            "UPDATE courier.endpoints SET circuit_state = 'open',"
            " circuit_until = now() - interval '1 second' WHERE id = $1",
            probed,
        )
        await conn.execute(
            "UPDATE courier.endpoints SET rate_tokens = 0, rate_tokens_at = NULL WHERE id = $1",
            metered,
        )
        results = await asyncio.gather(*(claim(c) for c in relays_conns))
        got = Counter(row["endpoint_id"] for rows in results for row in rows)
        taken = {"limited": got[limited], "probed": got[probed], "metered": got[metered]}
        # Exactly the limit: never more (the race), and not less (the claim still works).
        if taken != {"limited": 2, "probed": 1, "metered": 3}:
            over.append(taken)
    assert over == []


async def test_a_claim_skips_due_deliveries_another_transaction_has_locked(
    conn: asyncpg.Connection, dsn: str
) -> None:
    # Another transaction holds a due delivery's row: a relay's completion moving a key's
    # followers (hold_key_followers), an endpoint's deletion discarding its deliveries. The
    # claim takes the others at once instead of waiting for that transaction to end.
    await _endpoint(conn, "/hook")
    for i in range(3):
        await ops.enqueue(conn, "a.b", {"i": i})
    await conn.fetch(CLAIM, 0, uuid.uuid4(), 1000)
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM courier.deliveries ORDER BY id")]
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM courier.queue WHERE id = $1 FOR UPDATE", ids[0])
            await conn.execute("SET lock_timeout = '1s'")
            claimed = await asyncio.wait_for(conn.fetch(CLAIM, 10, uuid.uuid4(), 0), 1.0)
    finally:
        await other.close()
    assert sorted(r["id"] for r in claimed) == ids[1:]


async def test_a_locked_event_row_does_not_let_a_later_event_of_its_key_go_first(
    conn: asyncpg.Connection, dsn: str
) -> None:
    # An application table referencing the outbox: inserting a row locks the event's row FOR KEY
    # SHARE until that transaction ends, which conflicts with the fan-out's FOR UPDATE.
    await conn.execute("CREATE TABLE audit (event_id uuid REFERENCES courier.outbox (id))")
    await _endpoint(conn, "/hook")
    first = await ops.enqueue(conn, "a.b", {"n": 1}, ordering_key="k")
    second = await ops.enqueue(conn, "a.b", {"n": 2}, ordering_key="k")
    other = await asyncpg.connect(dsn)
    try:
        async with other.transaction():
            await other.execute("INSERT INTO audit VALUES ($1)", first)
            claimed = await asyncio.wait_for(conn.fetch(CLAIM, 10, uuid.uuid4(), 1000), 5.0)
    finally:
        await other.close()
    events = await conn.fetch(
        "SELECT d.event_id FROM courier.deliveries AS d WHERE d.id = ANY($1::bigint[])",
        [r["id"] for r in claimed],
    )
    # Key order: the second event may not leave before the first.
    assert [r["event_id"] for r in events] in ([], [first])
    assert second not in [r["event_id"] for r in events]
