"""Retention and held events (issue 12): events kept because of a dead letter (or pending work)
cost a pass nothing until they may have become prunable, however many there are."""

from __future__ import annotations

import uuid

import asyncpg

from pgcourier import ops
from pgcourier.retention import RetentionConfig, prune_pass
from tests.integration.test_retention import DAY, rows_of

# A walk covers at most 4 batches of 50 events per pass.
SMALL = RetentionConfig(
    retention=30 * DAY, dead_retention=90 * DAY, batch=50, max_batches=4, pause=0
)


async def held_by_dead_letters(conn: asyncpg.Connection, n: int, age_days: float) -> list[int]:
    """``n`` events ``age_days`` old, each with one dead letter (dead 10 days ago, well within
    the dead retention); returns the letters' ids, in the events' created_at order."""
    rows = await conn.fetch(
        "WITH e AS ("
        "  INSERT INTO courier.outbox (event_type, payload, created_at)"
        "  SELECT 'order.paid', '{}', now() - $2 * interval '1 day' + i * interval '1 ms'"
        "  FROM generate_series(1, $1) AS i RETURNING id, created_at"
        ") SELECT id FROM e ORDER BY created_at",
        n,
        age_days,
    )
    events = [r["id"] for r in rows]
    await conn.execute(
        "UPDATE courier.outbox SET fanned_out_at = created_at WHERE id = ANY($1)", events
    )
    letters: list[int] = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO courier.dead_letters (event_id, endpoint_id, attempts, dead_at)"
            " SELECT e, gen_random_uuid(), 1, now() - interval '10 days'"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS t(e, n) ORDER BY n RETURNING id",
            events,
        )
    ]
    return letters


async def drain(conn: asyncpg.Connection, config: RetentionConfig) -> int:
    """Passes until one stops without more to do; how many."""
    passes = 0
    while True:
        result = await prune_pass(conn, config)
        assert result is not None
        passes += 1
        if not result.more:
            return passes


async def test_discarded_letters_behind_many_held_events_are_pruned_in_one_pass(
    conn: asyncpg.Connection,
) -> None:
    """3,000 events held by dead letters (15 times what a walk covers in a pass), then five
    more: once the walk has passed them all, discarding the five letters lets the very next
    pass prune their events, and that pass costs a few batches, not a walk over the held."""
    await held_by_dead_letters(conn, 3000, 40)
    late = await held_by_dead_letters(conn, 5, 35)
    late_events = [
        await conn.fetchval("SELECT event_id FROM courier.dead_letters WHERE id = $1", i)
        for i in late
    ]
    await drain(conn, SMALL)  # the first look at every event (the walk: ~16 passes)
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 3005

    for letter in late:
        await ops.discard_dead(conn, letter)
    result = await prune_pass(conn, SMALL)

    assert result is not None
    assert result.removed["outbox"] == 5
    assert result.removed["delivery_history"] == 5
    for event in late_events:
        assert set((await rows_of(conn, event)).values()) == {0}, event
    assert result.batches <= 3, result
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 3000


async def test_a_replayed_letter_s_event_goes_once_delivered(conn: asyncpg.Connection) -> None:
    """A held event whose letter is replayed is held by pending work then; once delivered it is
    pruned (by a pass after the re-check's wait, here none)."""
    (letter,) = await held_by_dead_letters(conn, 1, 40)
    event: uuid.UUID = await conn.fetchval(
        "SELECT event_id FROM courier.dead_letters WHERE id = $1", letter
    )
    eager = RetentionConfig(
        retention=30 * DAY, dead_retention=90 * DAY, pause=0, recheck_after=0, recheck_cap=0
    )
    await drain(conn, eager)
    assert await ops.replay_dead(conn, [letter]) == [letter]
    await drain(conn, eager)
    assert (await rows_of(conn, event))["queue"] == 1
    await conn.execute(
        "WITH gone AS (DELETE FROM courier.queue WHERE id = $1 RETURNING *)"
        " INSERT INTO courier.delivery_history (id, event_id, endpoint_id, status, attempts)"
        " SELECT id, event_id, endpoint_id, 'delivered', 2 FROM gone",
        letter,
    )
    result = await prune_pass(conn, eager)
    assert result is not None
    assert result.removed["outbox"] == 1
    assert set((await rows_of(conn, event)).values()) == {0}
    assert await conn.fetchval("SELECT count(*) FROM courier.retention_held") == 0
