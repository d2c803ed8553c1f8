"""Retention (issue 12): what a pruning pass removes and keeps, its lock, its races, and what
operators see afterwards (CLI, API, metrics)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from pgcourier import ops, retention
from pgcourier.metrics import Metrics
from pgcourier.retention import (
    PRUNE_LOCK_KEY,
    Pruner,
    RetentionConfig,
    format_duration,
    prune_pass,
)
from tests.integration.helpers import AUTH, Receiver, add_endpoint, wait_until
from tests.integration.test_cli import pgcourier

DAY = 86400.0
# (recheck_after=recheck_cap=0: an event held by pending work is looked at again on the very
# next pass, not after as long again as it has been held.)
CONFIG = RetentionConfig(
    retention=30 * DAY,
    dead_retention=90 * DAY,
    batch=2,
    pause=0,
    recheck_after=0,
    recheck_cap=0,
)


async def make_event(
    conn: asyncpg.Connection, age_days: float, *, fanned: bool = True
) -> uuid.UUID:
    """An event created ``age_days`` ago, fanned out then unless ``fanned`` is false."""
    event_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO courier.outbox (event_type, payload, created_at)"
        " VALUES ('order.paid', '{\"n\": 1}', now() - $1 * interval '1 day') RETURNING id",
        age_days,
    )
    if fanned:
        # (The insert trigger clears fanned_out_at: a producer cannot set it.)
        await conn.execute(
            "UPDATE courier.outbox SET fanned_out_at = created_at WHERE id = $1", event_id
        )
    return event_id


async def make_delivery(
    conn: asyncpg.Connection, event_id: uuid.UUID, where: str, *, dead_days: float = 0
) -> int:
    """A delivery of ``event_id`` in the queue, the dead letters (dead ``dead_days`` ago) or the
    history (``delivered`` or ``discarded``), with one attempt."""
    endpoint_id = uuid.uuid4()
    delivery_id: int = await conn.fetchval("SELECT nextval('courier.delivery_ids')")
    if where == "queue":
        await conn.execute(
            "INSERT INTO courier.queue (id, event_id, endpoint_id) VALUES ($1, $2, $3)",
            delivery_id,
            event_id,
            endpoint_id,
        )
    elif where == "dead":
        await conn.execute(
            "INSERT INTO courier.dead_letters (id, event_id, endpoint_id, attempts, dead_at)"
            " VALUES ($1, $2, $3, 1, now() - $4 * interval '1 day')",
            delivery_id,
            event_id,
            endpoint_id,
            dead_days,
        )
    else:
        await conn.execute(
            "INSERT INTO courier.delivery_history (id, event_id, endpoint_id, status, attempts)"
            " VALUES ($1, $2, $3, $4, 1)",
            delivery_id,
            event_id,
            endpoint_id,
            where,
        )
    await conn.execute(
        "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt, started_at,"
        " duration_ms, status_code, outcome) VALUES ($1, $2, $3, 1, now(), 1.0, 200, 'retry')",
        delivery_id,
        event_id,
        endpoint_id,
    )
    return delivery_id


async def rows_of(conn: asyncpg.Connection, event_id: uuid.UUID) -> dict[str, int]:
    """How many rows refer to ``event_id`` in each table."""
    out = {}
    for table, column in (
        ("outbox", "id"),
        ("queue", "event_id"),
        ("dead_letters", "event_id"),
        ("delivery_history", "event_id"),
        ("attempts", "event_id"),
    ):
        out[table] = await conn.fetchval(
            f"SELECT count(*) FROM courier.{table} WHERE {column} = $1", event_id
        )
    return out


async def test_a_pass_removes_exactly_the_finished_and_the_expired(
    conn: asyncpg.Connection,
) -> None:
    done = await make_event(conn, 40)
    await make_delivery(conn, done, "delivered")
    await make_delivery(conn, done, "discarded")
    matched_nothing = await make_event(conn, 40)
    pending = await make_event(conn, 40)
    await make_delivery(conn, pending, "delivered")
    await make_delivery(conn, pending, "queue")
    not_fanned_out = await make_event(conn, 40, fanned=False)
    dead = await make_event(conn, 40)
    await make_delivery(conn, dead, "delivered")
    await make_delivery(conn, dead, "dead", dead_days=10)
    young = await make_event(conn, 1)
    await make_delivery(conn, young, "delivered")
    expired_dead = await make_event(conn, 100)
    expired_letter = await make_delivery(conn, expired_dead, "dead", dead_days=95)
    expired_mixed = await make_event(conn, 100)
    await make_delivery(conn, expired_mixed, "delivered")
    await make_delivery(conn, expired_mixed, "dead", dead_days=95)
    young_dead_only = await make_event(conn, 1)
    await make_delivery(conn, young_dead_only, "dead", dead_days=95)  # (dead before created: odd,
    # but it is what "dead letter older than DEAD_RETENTION, nothing else refers" must remove)
    before = {e: await rows_of(conn, e) for e in (pending, not_fanned_out, dead, young)}

    result = await prune_pass(conn, CONFIG)

    assert result is not None
    assert not result.more
    assert result.removed == {
        # done, matched_nothing, expired_dead, expired_mixed, young_dead_only
        "outbox": 5,
        # done's two, expired_mixed's delivered one
        "delivery_history": 3,
        # done 2, expired_dead 1, expired_mixed 2, young_dead_only 1
        "attempts": 6,
        "dead_letters": 3,
    }
    for gone in (done, matched_nothing, expired_dead, expired_mixed, young_dead_only):
        assert set((await rows_of(conn, gone)).values()) == {0}, gone
    for kept, rows in before.items():
        assert await rows_of(conn, kept) == rows, kept
    state = await conn.fetchrow("SELECT * FROM courier.retention")
    assert state["retention_seconds"] == 30 * DAY
    assert state["max_pruned_delivery_id"] >= expired_letter
    # Nothing more to do: a second pass removes nothing.
    again = await prune_pass(conn, CONFIG)
    assert again is not None
    assert set(again.removed.values()) == {0}


async def test_held_events_are_pruned_once_they_finish(conn: asyncpg.Connection) -> None:
    """An event held by a pending delivery is left behind the walk, and pruned by the re-check
    once that delivery finishes; so is one fanned out late."""
    held = await make_event(conn, 40)
    queued = await make_delivery(conn, held, "queue")
    late = await make_event(conn, 40, fanned=False)
    for _ in range(5):  # finished ones around them, so that the walk moves on in batches
        await make_delivery(conn, await make_event(conn, 40), "delivered")
    first_pass = await prune_pass(conn, CONFIG)
    assert first_pass is not None
    assert first_pass.removed["outbox"] == 5
    assert (await rows_of(conn, held))["outbox"] == 1

    # The delivery completes (queue -> history, as complete_deliveries does); the late event
    # is fanned out and matched no endpoint.
    await conn.execute(
        "WITH gone AS (DELETE FROM courier.queue WHERE id = $1 RETURNING *)"
        " INSERT INTO courier.delivery_history (id, event_id, endpoint_id, status, attempts)"
        " SELECT id, event_id, endpoint_id, 'delivered', 1 FROM gone",
        queued,
    )
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now() WHERE id = $1", late)
    second = await prune_pass(conn, CONFIG)
    assert second is not None
    assert second.removed["outbox"] == 2
    assert set((await rows_of(conn, held)).values()) == {0}
    assert (await rows_of(conn, late))["outbox"] == 0


async def test_zero_keeps_everything(conn: asyncpg.Connection) -> None:
    done = await make_event(conn, 400)
    await make_delivery(conn, done, "delivered")
    dead = await make_event(conn, 400)
    await make_delivery(conn, dead, "dead", dead_days=399)
    off = RetentionConfig(retention=0, dead_retention=90 * DAY)
    assert await prune_pass(conn, off) is None
    result = await ops.prune(conn, retention=0, dead_retention=90 * DAY)
    assert set(result["removed"].values()) == {0}
    assert "retention is off" in result["note"]
    # DEAD_RETENTION=0 keeps dead letters, while finished events still go.
    kept_dead = await prune_pass(conn, RetentionConfig(retention=30 * DAY, dead_retention=0))
    assert kept_dead is not None
    assert kept_dead.removed["dead_letters"] == 0
    assert (await rows_of(conn, dead))["dead_letters"] == 1
    assert (await rows_of(conn, done))["outbox"] == 0


async def test_the_pause_between_batches_grows_with_their_time(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass spreads its load: after each batch it pauses ``pace`` times as long as the batch
    took (at least ``pause``), so it never runs batches back to back on a busy server."""
    for _ in range(6):
        await make_delivery(conn, await make_event(conn, 400), "delivered")
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(retention, "_sleep", record)
    loop = asyncio.get_running_loop()
    began = loop.time()
    paced = dataclasses.replace(CONFIG, pause=0.001, pace=1000.0)
    result = await prune_pass(conn, paced)
    worked = loop.time() - began  # (no real pause was taken)
    assert result is not None
    assert result.removed["outbox"] == 6
    assert len(pauses) == result.batches >= 3
    # Every batch on a real server takes well over 50 us, so at pace 1000 each pause is its
    # batch's time scaled, far above the floor; together no more than the pass's time scaled.
    assert min(pauses) > 0.05
    assert sum(pauses) <= 1000.0 * worked
    # pace 0 and pause 0 (pgcourier prune: an operator waits): no pause at all.
    pauses.clear()
    for _ in range(2):
        await make_delivery(conn, await make_event(conn, 400), "delivered")
    assert await prune_pass(conn, dataclasses.replace(CONFIG, pace=0.0)) is not None
    assert pauses == []


async def test_dry_run_changes_nothing_and_counts_what_a_pass_removes(
    conn: asyncpg.Connection,
) -> None:
    for _ in range(3):
        event = await make_event(conn, 40)
        await make_delivery(conn, event, "delivered")
    old_dead = await make_event(conn, 100)
    await make_delivery(conn, old_dead, "dead", dead_days=95)
    snapshot = await conn.fetch("SELECT * FROM courier.outbox ORDER BY id")
    state = await conn.fetchrow("SELECT * FROM courier.retention")

    dry = await prune_pass(conn, CONFIG, dry_run=True)

    assert dry is not None
    assert dry.dry_run
    assert await conn.fetch("SELECT * FROM courier.outbox ORDER BY id") == snapshot
    assert await conn.fetchrow("SELECT * FROM courier.retention") == state
    real = await prune_pass(conn, CONFIG)
    assert real is not None
    assert real.removed == dry.removed
    assert dry.removed == {"outbox": 4, "delivery_history": 3, "attempts": 4, "dead_letters": 1}


async def test_pruning_racing_a_replay_leaves_no_half_state(dsn: str) -> None:
    """Dead letters past DEAD_RETENTION replayed while a pass prunes them: each ends either
    queued with its event and attempts, or gone with them; never a queued delivery whose event
    was pruned."""
    setup = await asyncpg.connect(dsn)
    pruner = await asyncpg.connect(dsn)
    replayer = await asyncpg.connect(dsn)
    try:
        letters: dict[int, uuid.UUID] = {}
        for _ in range(60):
            # Events younger than the retention, so that the pass starts on the dead letters
            # at once (the events go with their letters: nothing else refers to them).
            event = await make_event(setup, 1)
            letters[await make_delivery(setup, event, "dead", dead_days=95)] = event
        # The pass walks the letters from the lowest id, the replay from the highest: they meet
        # and contend somewhere in the middle, one batch at a time each.
        ids = sorted(letters, reverse=True)

        async def replay() -> list[int]:
            # Once the pass has taken its first batch (it has a few statements to make first).
            await wait_until(
                lambda: setup.fetchval("SELECT count(*) < 60 FROM courier.dead_letters"),
                interval=0.001,
            )
            queued = []
            for i in range(0, len(ids), 3):
                queued += await ops.replay_dead(replayer, ids[i : i + 3])
                await asyncio.sleep(0)
            return queued

        config = RetentionConfig(retention=30 * DAY, dead_retention=90 * DAY, batch=3, pause=0.02)
        result, queued = await asyncio.gather(prune_pass(pruner, config), replay())

        assert result is not None
        assert result.removed["dead_letters"] + len(queued) == len(ids)
        assert result.removed["dead_letters"] > 0
        assert queued
        assert result.removed["outbox"] == result.removed["dead_letters"]
        for delivery_id, event in letters.items():
            rows = await rows_of(setup, event)
            if delivery_id in queued:
                assert rows == {
                    "outbox": 1,
                    "queue": 1,
                    "dead_letters": 0,
                    "delivery_history": 0,
                    "attempts": 1,
                }, delivery_id
            else:
                assert set(rows.values()) == {0}, delivery_id
        orphans = await setup.fetchval(
            "SELECT count(*) FROM courier.queue AS q"
            " WHERE NOT EXISTS (SELECT 1 FROM courier.outbox AS o WHERE o.id = q.event_id)"
        )
        assert orphans == 0
    finally:
        for c in (setup, pruner, replayer):
            await c.close()


async def test_one_pass_at_a_time(dsn: str) -> None:
    holder = await asyncpg.connect(dsn)
    a = await asyncpg.connect(dsn)
    b = await asyncpg.connect(dsn)
    try:
        for _ in range(10):
            await make_delivery(holder, await make_event(holder, 40), "delivered")
        await holder.execute("SELECT pg_advisory_lock($1)", PRUNE_LOCK_KEY)
        assert await prune_pass(a, CONFIG) is None
        with pytest.raises(ops.PruneBusy, match="another pruning pass is running"):
            await ops.prune(a, retention=30 * DAY, dead_retention=90 * DAY)
        await holder.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_KEY)

        # Two passes at once (slowed down so that they overlap): one runs, the other skips.
        slow = RetentionConfig(retention=30 * DAY, dead_retention=90 * DAY, batch=1, pause=0.05)
        results = await asyncio.gather(prune_pass(a, slow), prune_pass(b, slow))
        ran = [r for r in results if r is not None]
        assert len(ran) == 1
        assert ran[0].removed["outbox"] == 10
    finally:
        for c in (holder, a, b):
            await c.close()


async def test_prune_command(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        done = await make_event(conn, 40)
        await make_delivery(conn, done, "delivered")
        count = "SELECT count(*) FROM courier.outbox"

        code, out, err = await pgcourier("prune", "--dry-run", dsn=dsn)
        assert code == 0, err
        dry = json.loads(out)
        assert dry["dry_run"] is True
        assert dry["would_remove"] == {
            "outbox": 1,
            "delivery_history": 1,
            "attempts": 1,
            "dead_letters": 0,
        }
        assert set(dry) >= {"events_before", "dead_letters_before", "batches", "more"}
        assert await conn.fetchval(count) == 1

        code, out, err = await pgcourier("prune", "--json", dsn=dsn, text=True)
        assert code == 0, err
        assert json.loads(out)["removed"]["outbox"] == 1
        assert await conn.fetchval(count) == 0

        code, out, err = await pgcourier("prune", dsn=dsn, text=True)
        assert code == 0, err
        assert "removed:" in out
        assert "outbox" in out

        code, out, err = await pgcourier("events", "show", str(done), dsn=dsn)
        assert code == 1
        assert f"no event {done}: it does not exist or was pruned by retention" in err
        assert "30d" in err
        assert len(err.strip().splitlines()) == 1

        code, out, err = await pgcourier("prune", dsn=dsn, PGCOURIER_RETENTION="0")
        assert code == 0
        assert "retention is off" in json.loads(out)["note"]
    finally:
        await conn.close()


async def test_not_found_says_retention(api: Any, conn: asyncpg.Connection) -> None:
    stranger = uuid.uuid4()
    response = await api.get(f"/api/v1/events/{stranger}", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"]["message"] == f"no event {stranger}"

    done = await make_event(conn, 40)
    await make_delivery(conn, done, "delivered")
    old = await make_event(conn, 100)
    letter = await make_delivery(conn, old, "dead", dead_days=95)
    replayed_event = await make_event(conn, 1)
    replayed = await make_delivery(conn, replayed_event, "dead", dead_days=1)
    await ops.replay_dead(conn, [replayed])
    await prune_pass(conn, CONFIG)

    for path in (f"/api/v1/events/{done}", f"/api/v1/events/{done}/attempts"):
        response = await api.get(path, headers=AUTH)
        assert response.status == 404
        message = (await response.json())["error"]["message"]
        assert message.startswith(f"no event {done}: it does not exist or was pruned by retention")
        assert "kept 30d" in message
    response = await api.get(f"/api/v1/dead-letters/{letter}", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"]["message"] == (
        f"no dead letter {letter}: it was pruned by retention or never existed "
        "(kept: dead letters 90d, finished deliveries 30d)"
    )
    response = await api.get(f"/api/v1/dead-letters/{replayed}", headers=AUTH)
    assert (await response.json())["error"]["message"] == (
        f"no dead letter {replayed}: delivery {replayed} is pending now"
    )


async def test_the_relay_prunes_in_the_background(
    relay: Any, receiver: Receiver, conn: asyncpg.Connection
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    ids = [await ops.enqueue(conn, "order.paid", {"n": n}) for n in range(5)]
    async with relay(retention=1.0) as rt:
        await receiver.wait_count(5)

        async def all_pruned() -> bool:
            return bool(await conn.fetchval("SELECT count(*) = 0 FROM courier.outbox"))

        await wait_until(all_pruned, timeout=15)
        for event_id in ids:
            assert set((await rows_of(conn, event_id)).values()) == {0}
        registry = rt.metrics.registry
        # (Counted when the pass ends, a moment after its last batch commits.)
        await wait_until(
            lambda: (
                registry.get_sample_value("pgcourier_pruned_rows_total", {"table": "outbox"}) == 5
            )
        )
        assert rt.admin_port is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{rt.admin_port}/metrics") as response,
        ):
            text = await response.text()
        assert 'pgcourier_table_size_bytes{table="outbox"}' in text
        assert 'pgcourier_pruned_rows_total{table="attempts"} 5.0' in text


async def test_stopping_cuts_a_pass_short_between_batches(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """A relay stopping mid-pass does not wait for the pass: it is cancelled, the batches done
    stay done with their progress, and the next pass goes on from there."""
    for _ in range(6):
        await make_delivery(conn, await make_event(conn, 40), "delivered")
    slow = RetentionConfig(retention=30 * DAY, dead_retention=90 * DAY, batch=1, pause=0.3)
    metrics = Metrics()
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(dsn, slow, metrics).run(stop))

    async def some_pruned() -> bool:
        return bool(await conn.fetchval("SELECT count(*) < 6 FROM courier.outbox"))

    await wait_until(some_pruned, timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    left = await conn.fetchval("SELECT count(*) FROM courier.outbox")
    assert 0 < left < 6
    assert await conn.fetchval("SELECT events_at IS NOT NULL FROM courier.retention")
    result = await prune_pass(conn, CONFIG)
    assert result is not None
    assert result.removed["outbox"] == left


def test_durations_read_as_written() -> None:
    assert [format_duration(s) for s in (30 * DAY, 90 * DAY, 7200, 90, 1.5)] == [
        "30d",
        "90d",
        "2h",
        "90s",
        "1.5s",
    ]
