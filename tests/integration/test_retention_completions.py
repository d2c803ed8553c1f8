"""Retention and a relay that lost its lease (issue 12): its late completion batch may name a
delivery that another relay finished and retention has pruned since. The batch must still apply
to everything else, and leave nothing behind that refers to the pruned event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.model import AttemptResult, Completion, Job
from pgcourier.policy import Dead, Delivered, Outcome
from pgcourier.retention import prune_pass
from pgcourier.store import PgStore
from tests.integration.test_retention import CONFIG, rows_of


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield PgStore(pool)
    finally:
        await pool.close()


def done(job: Job, outcome: Outcome) -> Completion:
    result = AttemptResult(started_at=datetime.now(UTC), duration=0.01, status=500)
    return Completion(job, result, outcome)


async def test_a_late_batch_naming_a_pruned_delivery_applies_the_rest(
    conn: asyncpg.Connection, store: PgStore
) -> None:
    await ops.create_endpoint(
        conn, url="http://127.0.0.1:1/x", event_types=["*"], max_in_flight=100
    )
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    await ops.enqueue(conn, "a.b", {"n": 1})
    [lost] = await store.claim(stale, limit=10, lease=0.2)
    await ops.enqueue(conn, "a.b", {"n": 2})
    [kept] = await store.claim(stale, limit=10, lease=60)
    await asyncio.sleep(0.3)  # the stale relay stalls past the first lease
    [again] = await store.claim(fresh, limit=10, lease=60)
    assert again.delivery_id == lost.delivery_id
    await store.complete(fresh, [done(again, Delivered())])
    # The event is old enough to go, and goes, with its history and attempt.
    await conn.execute(
        "UPDATE courier.outbox SET created_at = now() - interval '40 days' WHERE id = $1",
        lost.event_id,
    )
    result = await prune_pass(conn, CONFIG)
    assert result is not None
    assert result.removed["outbox"] == 1
    assert set((await rows_of(conn, lost.event_id)).values()) == {0}

    # The stale relay reports both, late: the lost one as dead (it would be a dead letter).
    await store.complete(stale, [done(lost, Dead("HTTP 500")), done(kept, Delivered())])

    # The one it still held is delivered, with its attempt.
    assert await rows_of(conn, kept.event_id) == {
        "outbox": 1,
        "queue": 0,
        "dead_letters": 0,
        "delivery_history": 1,
        "attempts": 1,
    }
    # Nothing refers to the pruned event: no dead letter, no queue row, no attempt that no
    # pass would ever prune (retention finds attempts through their event).
    assert set((await rows_of(conn, lost.event_id)).values()) == {0}
    orphans = await conn.fetchval(
        "SELECT count(*) FROM courier.attempts AS a"
        " WHERE NOT EXISTS (SELECT 1 FROM courier.outbox AS o WHERE o.id = a.event_id)"
    )
    assert orphans == 0
