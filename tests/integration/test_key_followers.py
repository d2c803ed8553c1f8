"""The fan-out of a keyed event behind its key's delivery that waits for a retry (migration 0014).

Such a delivery cannot go before the one ahead of it, so it is due when that one is: the claims
in between never walk it (with thousands of them behind one failing key, every claim used to,
and every other endpoint's latency rose with it). Recovering the head brings them forward, and a
hold of many of them vacuums the queue at once (their old row versions would slow every claim).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from pgcourier import ops, queue_vacuum
from pgcourier.model import AttemptResult, Completion
from pgcourier.policy import Retry
from pgcourier.store import PgStore

CLAIM = "SELECT id, event_id FROM courier.claim(10, 60, $1, $2, 1000)"


async def _setup(conn: asyncpg.Connection) -> tuple[uuid.UUID, int]:
    """An endpoint whose key "k" has one delivery, claimed; returns the endpoint and its id."""
    ep = await ops.create_endpoint(conn, url="http://127.0.0.1:1/hook", event_types=["*"])
    head_event = await ops.enqueue(conn, "a.b", {"n": 0}, ordering_key="k")
    claimed = await conn.fetch(CLAIM, uuid.uuid4(), 100)
    assert [r["event_id"] for r in claimed] == [head_event]
    return uuid.UUID(str(ep["id"])), claimed[0]["id"]


async def _fan_out_three(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    """A follower on "k", an event on another key and one without a key, fanned out."""
    ids = {
        "follower": await ops.enqueue(conn, "a.b", {"n": 1}, ordering_key="k"),
        "other key": await ops.enqueue(conn, "a.b", {"n": 2}, ordering_key="j"),
        "no key": await ops.enqueue(conn, "a.b", {"n": 3}),
    }
    assert await conn.fetchval("SELECT courier.fan_out(100)") == 3
    rows = await conn.fetch(
        "SELECT event_id, id, due_at, due_at <= now() AS due FROM courier.queue"
        " WHERE event_id = ANY($1::uuid[])",
        list(ids.values()),
    )
    by_event = {r["event_id"]: r for r in rows}
    return {name: by_event[i] for name, i in ids.items()}


async def test_behind_a_retry_a_follower_is_due_with_its_head(conn: asyncpg.Connection) -> None:
    _, head = await _setup(conn)
    # The head's attempt failed: as complete_deliveries records a retry, due in 5 minutes.
    await conn.execute(
        "UPDATE courier.queue SET lease_token = NULL, attempts = 1,"
        " due_at = now() + interval '5 minutes' WHERE id = $1",
        head,
    )
    head_due = await conn.fetchval("SELECT due_at FROM courier.queue WHERE id = $1", head)
    rows = await _fan_out_three(conn)
    assert rows["follower"]["due_at"] == head_due
    assert not rows["follower"]["due"]
    assert rows["other key"]["due"]
    assert rows["no key"]["due"]
    # Nothing due for the claim to walk past; the others go.
    claimed = await conn.fetch(CLAIM, uuid.uuid4(), 0)
    assert {r["id"] for r in claimed} == {rows["other key"]["id"], rows["no key"]["id"]}
    # When the head's retry comes, both are due, and order still holds: the head goes first.
    await conn.execute(
        "UPDATE courier.queue SET due_at = due_at - interval '5 minutes'"
        " WHERE id = ANY($1::bigint[])",
        [head, rows["follower"]["id"]],
    )
    assert [r["id"] for r in await conn.fetch(CLAIM, uuid.uuid4(), 0)] == [head]


async def test_behind_a_delivery_in_flight_a_follower_is_due_at_once(
    conn: asyncpg.Connection,
) -> None:
    # The head is leased (due_at is then its lease's end): its attempt may end any moment, and
    # the follower must not wait for the lease.
    _, head = await _setup(conn)
    lease_end = await conn.fetchval("SELECT due_at FROM courier.queue WHERE id = $1", head)
    rows = await _fan_out_three(conn)
    assert rows["follower"]["due"]
    assert rows["follower"]["due_at"] < lease_end - timedelta(seconds=30)
    # Order holds regardless: the claim skips it while the head is in flight.
    claimed = await conn.fetch(CLAIM, uuid.uuid4(), 0)
    assert rows["follower"]["id"] not in {r["id"] for r in claimed}


async def test_recovering_the_head_brings_its_followers_forward(conn: asyncpg.Connection) -> None:
    # An operator recovers the endpoint (the receiver is fixed): the head is due now, and the
    # deliveries waiting behind it for its old retry time must not go on waiting for it.
    ep, head = await _setup(conn)
    await conn.execute(
        "UPDATE courier.queue SET lease_token = NULL, attempts = 1, last_attempt_at = now(),"
        " due_at = now() + interval '2 hours' WHERE id = $1",
        head,
    )
    rows = await _fan_out_three(conn)
    assert not rows["follower"]["due"]
    recovered = await ops.recover_endpoint(
        conn, str(ep), since=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert recovered == [head]  # only the failed one counts as recovered
    due = await conn.fetch(
        "SELECT id FROM courier.queue WHERE endpoint_id = $1 AND due_at <= now() ORDER BY id", ep
    )
    assert [r["id"] for r in due] == [head, *sorted(r["id"] for r in rows.values())]
    # Key order still holds: the head goes first, its follower only after it.
    claimed = {r["id"] for r in await conn.fetch(CLAIM, uuid.uuid4(), 0)}
    assert head in claimed
    assert rows["follower"]["id"] not in claimed


async def _hold(dsn: str, conn: asyncpg.Connection, followers: int) -> int:
    """A key's head fails with ``followers`` deliveries queued behind it; returns how many
    times the queue was vacuumed by hand (not by autovacuum) meanwhile."""
    await conn.execute("ALTER TABLE courier.queue SET (autovacuum_enabled = false)")
    await ops.create_endpoint(
        conn, url="http://127.0.0.1:1/hook", event_types=["*"], max_in_flight=1000
    )
    await conn.execute(
        "SELECT courier.enqueue('a.b', jsonb_build_object('i', i), 'k')"
        " FROM generate_series(0, $1) AS i",
        followers,
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    store = PgStore(pool)
    try:
        relay = uuid.uuid4()
        [head] = await store.claim(relay, limit=1, lease=30)
        await conn.execute("SELECT courier.fan_out($1)", followers + 1)
        before = await _vacuums(conn)
        failed = AttemptResult(started_at=datetime.now(UTC), duration=0.01, status=500)
        await store.complete(relay, [Completion(head, failed, Retry(after=60))])
        held = await conn.fetchval(
            "SELECT count(*) FROM courier.queue WHERE id > $1 AND due_at > now()",
            head.delivery_id,
        )
        assert held == followers  # all of them wait for the head's retry
        await store.vacuumed()  # it runs beside the completions
        return await _vacuums(conn) - before
    finally:
        await store.close()
        await pool.close()


async def _vacuums(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count: int = await conn.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'courier.queue'::regclass"
    )
    return count


async def test_a_large_hold_vacuums_the_queue_at_once(dsn: str, conn: asyncpg.Connection) -> None:
    # The old versions of the moved rows would otherwise slow every claim until a vacuum.
    assert await _hold(dsn, conn, queue_vacuum.HOLD_VACUUM_ROWS) == 1


async def test_a_small_hold_leaves_the_queue_to_its_vacuums(
    dsn: str, conn: asyncpg.Connection
) -> None:
    assert await _hold(dsn, conn, 20) == 0
