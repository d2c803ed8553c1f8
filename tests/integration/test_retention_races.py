"""Retention racing operators (issue 12): pruning old dead letters while they are discarded and
replayed in bulk, and a deadlock that reaches an operation: never a 500, never a half state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from pgcourier import ops
from pgcourier.retention import RetentionConfig, prune_pass
from tests.integration.helpers import AUTH, wait_until
from tests.integration.test_retention import DAY

DEAD_CONFIG = RetentionConfig(retention=30 * DAY, dead_retention=90 * DAY, batch=100, pause=0)


async def add_letters(conn: asyncpg.Connection, n: int) -> dict[int, uuid.UUID]:
    """``n`` dead letters past the dead retention, of young events (so that the events go with
    their letters), laid out so that lock orders disagree: the highest ids first on disk, and
    dead_at rising with the id (the pass walks by dead_at, a DELETE by id list goes by id,
    a DELETE by filter by the table's physical order)."""
    events: list[uuid.UUID] = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO courier.outbox (event_type, payload, created_at, fanned_out_at)"
            " SELECT 'order.paid', '{}', now() - interval '1 day', NULL"
            " FROM generate_series(1, $1) RETURNING id",
            n,
        )
    ]
    await conn.execute(
        "UPDATE courier.outbox SET fanned_out_at = created_at WHERE id = ANY($1)", events
    )
    first: int = await conn.fetchval("SELECT nextval('courier.delivery_ids')")
    await conn.execute("SELECT setval('courier.delivery_ids', $1)", first + n + 1)
    ids = list(range(first + 1, first + n + 1))
    await conn.execute(
        "INSERT INTO courier.dead_letters (id, event_id, endpoint_id, attempts, dead_at)"
        " SELECT i, e, gen_random_uuid(), 1, now() - interval '95 days' + i * interval '1 ms'"
        " FROM unnest($1::bigint[], $2::uuid[]) AS t(i, e) ORDER BY i DESC",
        ids,
        events,
    )
    return dict(zip(ids, events, strict=True))


async def test_pruning_racing_bulk_discards_and_replays_never_deadlocks(dsn: str) -> None:
    """A pass pruning expired dead letters, a console bulk discard of all of them and an API
    bulk replay, all at once, several times: none of the three fails, and every letter ends in
    exactly one place (pruned with its event, discarded into the history, or queued).
    (A stress check of the accounting: whether the sides meet in a deadlock depends on their
    plans and timing, so the two tests below make the deadlock certain.)"""
    setup, pruner, discarder, replayer = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        for round_ in range(6):
            letters = await add_letters(setup, 600)
            ids = sorted(letters)

            async def discard(delay: float) -> list[int]:
                # Starting a little later each round, to meet the pass at different batches.
                await asyncio.sleep(delay)
                return await ops.discard_many(discarder, None)

            result, discarded, queued = await asyncio.gather(
                prune_pass(pruner, DEAD_CONFIG),
                discard(0.003 * round_),
                # In id order from the top, where the discard (physical order) starts too.
                ops.replay_dead(replayer, ids[::-1], batch_size=200),
            )
            assert result is not None
            pruned = result.removed["dead_letters"]
            assert pruned + len(discarded) + len(queued) == len(ids)
            assert await setup.fetchval("SELECT count(*) FROM courier.dead_letters") == 0
            history = await setup.fetchval(
                "SELECT count(*) FROM courier.delivery_history WHERE id = ANY($1::bigint[])", ids
            )
            assert history == len(discarded)
            in_queue = await setup.fetchval(
                "SELECT count(*) FROM courier.queue AS q WHERE q.id = ANY($1::bigint[])"
                " AND EXISTS (SELECT 1 FROM courier.outbox AS o WHERE o.id = q.event_id)",
                ids,
            )
            assert in_queue == len(queued)
            await setup.execute("DELETE FROM courier.queue")
    finally:
        for c in (setup, pruner, discarder, replayer):
            await c.close()


async def test_a_deadlock_in_a_bulk_replay_is_retried_not_a_500(api: Any, dsn: str) -> None:
    """A replay of two letters that deadlocks with another session (made to lose: it is the
    victim Postgres picks) is retried and succeeds; the caller never sees a 500."""
    setup = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    try:
        letters = await add_letters(setup, 2)
        lo, hi = sorted(letters)
        # Rows on disk in id order this time, so that the replay locks lo, then hi.
        await setup.execute("DELETE FROM courier.dead_letters")
        await setup.execute(
            "INSERT INTO courier.dead_letters (id, event_id, endpoint_id, attempts)"
            " SELECT i, e, gen_random_uuid(), 1 FROM unnest($1::bigint[], $2::uuid[]) AS t(i, e)"
            " ORDER BY i",
            [lo, hi],
            [letters[lo], letters[hi]],
        )
        # The other session checks for deadlocks late, so the replay is the one aborted.
        await other.execute("SET deadlock_timeout = '10s'")
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM courier.dead_letters WHERE id = $1 FOR UPDATE", hi)

        async def close_the_cycle() -> None:
            await asyncio.sleep(0.3)  # the replay holds lo and waits for hi
            await other.execute("SELECT 1 FROM courier.dead_letters WHERE id = $1 FOR UPDATE", lo)
            await asyncio.sleep(0.2)  # the replay's retry waits for us; then we let go
            await tx.rollback()

        response, _ = await asyncio.gather(
            api.post("/api/v1/dead-letters/replay", headers=AUTH, json={"ids": [lo, hi]}),
            close_the_cycle(),
        )
        assert response.status == 200, await response.text()
        assert sorted((await response.json())["replayed"]) == [lo, hi]
    finally:
        await setup.close()
        await other.close()


async def test_a_pass_never_waits_on_a_letter_an_operator_holds(dsn: str) -> None:
    """The deadlock itself, made certain: an operator's statement holds the newer of two expired
    letters and then wants the older one (as a DELETE by filter going through the table in
    another order does). The pass takes the older one and skips the held one instead of waiting
    on it, so there is no cycle; the held one is pruned by the next pass once it is let go."""
    setup = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    pruner = await asyncpg.connect(dsn)
    try:
        letters = await add_letters(setup, 2)
        lo, hi = sorted(letters)
        await setup.execute("CLUSTER courier.dead_letters USING dead_letters_pkey")  # lo first
        # The other session checks for deadlocks late: were there a cycle, the pass would be
        # the one aborted.
        await other.execute("SET deadlock_timeout = '10s'")
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM courier.dead_letters WHERE id = $1 FOR UPDATE", hi)

        async def want_lo() -> None:
            # Once the pass holds it (a lock sets the row's xmax) or has deleted it: asked for
            # before, the operator would have it first and the pass rightly skip both (a fixed
            # 0.3 s wait did that on a slow machine). A pass that waited on hi never takes it.
            await wait_until(
                lambda: setup.fetchval(
                    "SELECT coalesce(max(xmax::text::bigint), 1) <> 0"
                    " FROM courier.dead_letters WHERE id = $1",
                    lo,
                )
            )
            await other.execute("SELECT 1 FROM courier.dead_letters WHERE id = $1 FOR UPDATE", lo)

        config = RetentionConfig(retention=30 * DAY, dead_retention=90 * DAY, batch=10, pause=0)
        result, _ = await asyncio.gather(prune_pass(pruner, config), want_lo())
        await tx.rollback()
        assert result is not None
        assert result.removed["dead_letters"] == 1
        assert await setup.fetchval("SELECT array_agg(id) FROM courier.dead_letters") == [hi]
        again = await prune_pass(pruner, config)
        assert again is not None
        assert again.removed["dead_letters"] == 1
        assert await setup.fetchval("SELECT count(*) FROM courier.dead_letters") == 0
    finally:
        for c in (setup, other, pruner):
            await c.close()
