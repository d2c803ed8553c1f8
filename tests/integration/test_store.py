"""The SQL behind claims and leases, driven directly through PgStore."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from pgcourier import ops, queue_vacuum
from pgcourier.model import AttemptResult, Completion
from pgcourier.policy import Dead, Delivered, Retry
from pgcourier.store import PgStore
from tests.integration.helpers import wait_until


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    store = PgStore(pool)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


def done(job, outcome=None) -> Completion:
    return Completion(
        job,
        AttemptResult(started_at=datetime.now(UTC), duration=0.01, status=200),
        outcome or Delivered(),
    )


async def test_a_stale_relay_cannot_complete_a_delivery_taken_over(conn, store) -> None:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    await ops.enqueue(conn, "a.b", {})
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    [job] = await store.claim(stale, limit=10, lease=0.2)
    await asyncio.sleep(0.3)  # the stale relay stalls past its lease
    [again] = await store.claim(fresh, limit=10, lease=30)
    assert again.delivery_id == job.delivery_id
    assert await store.renew(stale, [job.delivery_id], 30) == set()  # it learns it lost it
    await store.complete(stale, [done(job, Retry(after=60))])
    row = await conn.fetchrow("SELECT status, attempts, lease_token FROM courier.deliveries")
    assert dict(row) == {"status": "pending", "attempts": 0, "lease_token": fresh}
    await store.complete(fresh, [done(again)])
    row = await conn.fetchrow("SELECT status, attempts, lease_token FROM courier.deliveries")
    assert dict(row) == {"status": "delivered", "attempts": 1, "lease_token": None}
    # Both attempts happened on the wire, so both are in the log.
    assert await conn.fetchval("SELECT count(*) FROM courier.attempts") == 2


async def test_claims_do_not_overlap_while_leases_hold(conn, store) -> None:
    await ops.create_endpoint(
        conn, url="http://127.0.0.1:1/x", event_types=["*"], max_in_flight=1000
    )
    await conn.execute("SELECT courier.enqueue('a.b', '{}'::jsonb) FROM generate_series(1, 300)")
    relays = [uuid.uuid4() for _ in range(3)]
    ids: list[int] = []
    for _ in range(20):  # relays claiming at once take turns per endpoint; none takes twice
        batches = await asyncio.gather(*(store.claim(r, limit=150, lease=30) for r in relays))
        ids += [job.delivery_id for batch in batches for job in batch]
        if len(ids) >= 300:
            break
    assert len(ids) == len(set(ids)) == 300
    assert all(await asyncio.gather(*(store.claim(r, 10, 30) for r in relays))) is False


async def test_release_makes_deliveries_due_at_once(conn, store) -> None:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    await ops.enqueue(conn, "a.b", {})
    owner = uuid.uuid4()
    [job] = await store.claim(owner, limit=10, lease=600)
    assert await store.claim(uuid.uuid4(), limit=10, lease=600) == []
    await store.release(owner, [job.delivery_id])
    [again] = await store.claim(uuid.uuid4(), limit=10, lease=600)
    assert again.delivery_id == job.delivery_id


async def test_next_due_ignores_disabled_endpoints(conn, store) -> None:
    endpoint = await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    await ops.enqueue(conn, "a.b", {})
    [job] = await store.claim(uuid.uuid4(), limit=10, lease=600)
    assert await store.next_due() is not None
    await ops.set_endpoint_enabled(conn, endpoint["id"], False)
    assert await store.next_due() is None
    assert job.attempt == 1


async def test_claim_serves_due_deliveries_first_and_respects_the_limit(conn, store) -> None:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    await ops.enqueue(conn, "a.old", {})
    [old] = await store.claim(uuid.uuid4(), limit=10, lease=0.1)  # its relay dies
    for _ in range(5):
        await ops.enqueue(conn, "a.new", {})
    await asyncio.sleep(0.2)
    jobs = await store.claim(uuid.uuid4(), limit=3, lease=30)
    assert len(jobs) == 3
    assert jobs[0].delivery_id == old.delivery_id  # the expired lease comes back first
    assert [j.event_type for j in jobs] == ["a.old", "a.new", "a.new"]
    # Fan-out is not bound by the claim's budget: the other new deliveries exist, unleased.
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM courier.deliveries"
            " WHERE lease_token IS NULL AND status = 'pending'"
        )
        == 3
    )


async def test_finished_deliveries_leave_the_queue(conn, store) -> None:
    """Delivered ones move to the history, dead ones to the dead letters (same id), retries
    stay queued; replay puts a dead letter back with its id and a fresh schedule."""
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    for _ in range(3):
        await ops.enqueue(conn, "a.b", {})
    relay = uuid.uuid4()
    ok, dead, retry = await store.claim(relay, limit=10, lease=30)
    await store.complete(relay, [done(ok), done(dead, Dead("HTTP 500")), done(retry, Retry(60))])
    queued = await conn.fetch("SELECT id, attempts, lease_token FROM courier.queue")
    assert [tuple(r) for r in queued] == [(retry.delivery_id, 1, None)]
    history = await conn.fetch("SELECT id, status, attempts FROM courier.delivery_history")
    assert [tuple(r) for r in history] == [(ok.delivery_id, "delivered", 1)]
    letters = await conn.fetch("SELECT id, attempts, last_status_code FROM courier.dead_letters")
    assert [tuple(r) for r in letters] == [(dead.delivery_id, 1, 200)]
    assert await ops.replay_dead(conn, [dead.delivery_id]) == [dead.delivery_id]
    row = await conn.fetchrow(
        "SELECT attempts, schedule_base FROM courier.queue WHERE id = $1", dead.delivery_id
    )
    assert tuple(row) == (1, 1)
    assert await conn.fetchval("SELECT count(*) FROM courier.dead_letters") == 0


async def test_housekeeping_vacuums_the_queue_when_autovacuum_does_not(
    conn, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server without autovacuum the relay keeps the queue from growing by every delivery
    ever made: past a number of dead rows, reap() vacuums it."""
    monkeypatch.setattr(queue_vacuum, "VACUUM_DEAD_ROWS", 50)
    await conn.execute("ALTER TABLE courier.queue SET (autovacuum_enabled = false)")
    await conn.execute(
        "INSERT INTO courier.queue (event_id, endpoint_id)"
        " SELECT gen_random_uuid(), gen_random_uuid() FROM generate_series(1, 200)"
    )
    await conn.execute("DELETE FROM courier.queue")
    await conn.execute("SELECT pg_stat_force_next_flush()")  # the dead rows counted now

    async def vacuumed() -> bool:
        await store.reap(60)
        return bool(
            await conn.fetchval(
                "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
                " WHERE relid = 'courier.queue'::regclass"
            )
        )

    await wait_until(vacuumed, timeout=15, interval=0.5)


async def test_a_busy_relay_vacuums_the_queue_between_housekeeping_rounds(
    conn, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every finished delivery leaves dead versions in the queue, and each claim counts its
    endpoint's leased rows over every lease version not yet vacuumed: on a drain that count grew
    to 47,000 index entries (5.7 ms a claim on 15 without autovacuum). So the relay checks after
    every CHURN_CHECK_ROWS deliveries it finishes, not only at housekeeping (every 10 s)."""
    monkeypatch.setattr(queue_vacuum, "CHURN_CHECK_ROWS", 50)
    await conn.execute("ALTER TABLE courier.queue SET (autovacuum_enabled = false)")
    await ops.create_endpoint(
        conn, url="http://127.0.0.1:1/x", event_types=["*"], max_in_flight=1000
    )
    relay = uuid.uuid4()

    async def vacuumed() -> bool:
        # reap() is never called: only finishing deliveries may vacuum here. Batches go on
        # until the dead rows' count (flushed by each session at most once a second) is seen.
        for _ in range(60):
            await ops.enqueue(conn, "a.b", {})
        jobs = await store.claim(relay, limit=100, lease=30)
        await store.complete(relay, [done(job) for job in jobs])
        return bool(
            await conn.fetchval(
                "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
                " WHERE relid = 'courier.queue'::regclass"
            )
        )

    await wait_until(vacuumed, timeout=20, interval=0.5)


async def _queue_slow_to_vacuum(conn: asyncpg.Connection) -> None:
    """Enough dead rows that a vacuum takes far longer than a completion's own statement."""
    await conn.execute("ALTER TABLE courier.queue SET (autovacuum_enabled = false)")
    await conn.execute(
        "INSERT INTO courier.queue (event_id, endpoint_id)"
        " SELECT gen_random_uuid(), gen_random_uuid() FROM generate_series(1, 200000)"
    )
    await conn.execute("DELETE FROM courier.queue")
    await conn.execute("SELECT pg_stat_force_next_flush()")  # the dead rows counted now


async def _vacuums(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'courier.queue'::regclass"
    )
    return count


async def _claimed(conn: asyncpg.Connection, store: PgStore, relay: uuid.UUID, n: int) -> list:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    for _ in range(n):
        await ops.enqueue(conn, "a.b", {})
    jobs = await store.claim(relay, limit=n, lease=30)
    assert len(jobs) == n
    return jobs


async def test_completions_do_not_wait_for_the_queue_vacuum_they_start(
    conn, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vacuum that finished deliveries call for runs beside the completions, not inside
    them: every outcome finished meanwhile used to wait behind it (10-40 ms a vacuum)."""
    monkeypatch.setattr(queue_vacuum, "CHURN_CHECK_ROWS", 1)
    await _queue_slow_to_vacuum(conn)
    relay = uuid.uuid4()
    [job] = await _claimed(conn, store, relay, 1)
    await store.complete(relay, [done(job)])
    assert await conn.fetchval("SELECT count(*) FROM courier.delivery_history") == 1
    assert await _vacuums(conn) == 0  # the completion is written; the vacuum goes on
    await store.vacuumed()
    assert await _vacuums(conn) == 1


async def test_a_closed_store_starts_no_vacuum(
    conn, store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_vacuum, "HOLD_VACUUM_ROWS", 0)
    monkeypatch.setattr(queue_vacuum, "HOLD_VACUUM_INTERVAL", 0.0)
    relay = uuid.uuid4()
    [job] = await _claimed(conn, store, relay, 1)
    await store.close()
    await store.complete(relay, [done(job)])
    await store.vacuumed()
    assert await conn.fetchval("SELECT count(*) FROM courier.delivery_history") == 1
    assert await _vacuums(conn) == 0
