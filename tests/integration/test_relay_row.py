"""The relay's row in courier.relays, through which producers know whom to notify.

The table is UNLOGGED: a crash restart empties it. A relay whose row is gone is never notified
(producers notify only relays flagged idle), so whatever the relay writes about itself must put
the row back, and an idle relay must go on being woken by NOTIFY, not by its poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from pgcourier import ops
from pgcourier.runtime import Runtime
from tests.integration.helpers import Receiver, add_endpoint, wait_until

IDLE_ROW = "SELECT coalesce(bool_and(idle), false) FROM courier.relays"


@contextlib.asynccontextmanager
async def idle_relay(
    relay: Callable[..., Any], conn: asyncpg.Connection, **settings: Any
) -> AsyncIterator[Runtime]:
    """A relay listening and flagged idle, that polls once a minute: within a test, only a
    NOTIFY wakes it. (A long lease: the heartbeat, every 10 s, would register it again.)"""
    async with relay(poll_interval=60, lease=120, **settings) as rt:
        await wait_until(lambda: rt.listener.connected)
        await wait_until(lambda: conn.fetchval(IDLE_ROW))
        yield rt


async def test_marking_itself_idle_puts_back_a_vanished_row(
    conn: asyncpg.Connection, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    # The heartbeat would register the relay again; this checks that going idle does it.
    async with idle_relay(relay, conn) as rt:
        await conn.execute("TRUNCATE courier.relays")  # what a crash restart does
        # Something wakes the relay (a replay, the listener reconnecting after the restart); it
        # finds nothing to do and marks itself idle again. An UPDATE matched no row there.
        await conn.execute("SELECT pg_notify('courier_outbox', '')")
        await wait_until(lambda: conn.fetchval(IDLE_ROW), timeout=5)
        polls = rt.relay.wakeups["poll"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ops.enqueue(conn, "order.paid", {})
        await receiver.wait_count(1, timeout=5)
        assert loop.time() - started < 5  # the poll would take 60 s
        assert rt.relay.wakeups["poll"] == polls


async def test_a_producer_wakes_an_idle_relay_whose_row_another_transaction_holds(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """The row of an idle relay is locked for a moment by its heartbeat, and by the producer
    that flips it to busy until that producer commits. A producer that finds the relay idle
    but its row locked flips nothing; if it does not notify, nobody may: the heartbeat never
    does, and the flipping producer's NOTIFY can wake the relay before this producer's event
    is visible, so that the event waits for the poll."""
    await add_endpoint(conn, receiver.url("/hook"))
    async with idle_relay(relay, conn) as rt:
        polls = rt.relay.wakeups["poll"]
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                # What the heartbeat's UPDATE, or a flipping producer, does to the row.
                await holder.execute("SELECT 1 FROM courier.relays FOR UPDATE")
                await ops.enqueue(conn, "order.paid", {})
                await receiver.wait_count(1, timeout=5)  # the poll would take 60 s
        finally:
            await holder.close()
        assert rt.relay.wakeups["poll"] == polls


# A commit that takes 2 s after the wake-up check, as a slow disk or a synchronous standby
# makes it: deferred constraint triggers fire in name order, so this one runs after outbox_wake.
SLOW_COMMIT = """
CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('test.slow_commit', true) = 'on' THEN
        PERFORM pg_sleep(2);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER outbox_zz_slow_commit AFTER INSERT ON courier.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.slow_commit();
"""


async def test_a_relay_going_idle_waits_for_the_commits_of_producers_that_saw_it_busy(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """A producer reads the relay's flag when it commits, and its event becomes visible when the
    commit ends (after the WAL flush, after a synchronous standby's answer). One that read
    "busy" does not notify. A relay that marked itself idle and claimed once more before that
    commit ended did not see the event, which then waited for the poll: two events committed
    a moment apart at an idle relay lost the second to the poll about once in 25. Marking
    itself idle now waits for the commits of producers that may have read "busy"."""
    await add_endpoint(conn, receiver.url("/hook"))
    await conn.execute(SLOW_COMMIT)
    async with idle_relay(relay, conn, idle_settle_timeout=5) as rt:
        polls = rt.relay.wakeups["poll"]
        holder = await asyncpg.connect(dsn)
        producer = await asyncpg.connect(dsn)
        try:
            # The relay is at work (its flag says busy) and about to mark itself idle: the
            # holder keeps it there by locking its row.
            await holder.execute("UPDATE courier.relays SET idle = false")
            held = holder.transaction()
            await held.start()
            await holder.execute("SELECT 1 FROM courier.relays FOR UPDATE")
            await conn.execute("SELECT pg_notify('courier_outbox', '')")
            await wait_until(
                lambda: conn.fetchval(
                    "SELECT count(*) > 0 FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%relay%idle%'"
                )
            )

            async def commit_slowly() -> None:
                async with producer.transaction():
                    await producer.execute("SET LOCAL test.slow_commit = 'on'")
                    await ops.enqueue(producer, "order.paid", {})

            committing = asyncio.create_task(commit_slowly())
            # Its check is done (the relay looked busy) and it is still committing.
            await wait_until(
                lambda: conn.fetchval(
                    "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                )
            )
            await held.commit()  # the relay marks itself idle, and claims once more
            await committing
            await receiver.wait_count(1, timeout=5)  # the poll would take 60 s
        finally:
            await holder.close()
            await producer.close()
        assert rt.relay.wakeups["poll"] == polls


async def test_a_transaction_holding_the_producers_lock_holds_up_going_idle_once(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """A transaction can hold the producers' lock for long: SET CONSTRAINTS ... IMMEDIATE fires
    the wake-up trigger at the INSERT, and a prepared transaction keeps its locks. A relay going
    idle then waits IDLE_SETTLE_TIMEOUT, gives up, marks itself idle all the same, and does not
    wait again for a while. Producers never wait for it: while it waits, they notify."""
    await add_endpoint(conn, receiver.url("/hook"))
    settle = 2.0
    waiting = (
        "SELECT count(*) > 0 FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE '%claim_going_idle%'"
    )
    async with idle_relay(relay, conn, idle_settle_timeout=settle) as rt:
        polls = rt.relay.wakeups["poll"]
        loop = asyncio.get_running_loop()
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT pg_advisory_xact_lock_shared(courier.producers_lock())"
                )
                started = loop.time()
                await ops.enqueue(conn, "order.paid", {"n": 1})
                await receiver.wait_count(1, timeout=5)
                await wait_until(lambda: conn.fetchval(waiting), timeout=settle / 2)
                committed = loop.time()
                await ops.enqueue(conn, "order.paid", {"n": 2})
                enqueue_took = loop.time() - committed
                await receiver.wait_count(2, timeout=5)
                await wait_until(lambda: conn.fetchval(IDLE_ROW), timeout=5)
                await ops.enqueue(conn, "order.paid", {"n": 3})
                await receiver.wait_count(3, timeout=5)
                await wait_until(lambda: conn.fetchval(IDLE_ROW), timeout=5)
                took = loop.time() - started
        finally:
            await holder.close()
        assert enqueue_took < settle / 2  # the relay was waiting; the producer was not
        assert settle <= took < 2 * settle  # the relay waited once, not again
        assert rt.relay.wakeups["poll"] == polls


async def test_a_repeatable_read_producer_commits_and_wakes_the_relay(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """A producer under REPEATABLE READ (or SERIALIZABLE) reads the relays' flags in the
    snapshot its transaction began with. Once the relay had been woken and gone idle again
    since, flipping its flag (FOR UPDATE) failed the producer's COMMIT with a serialization
    error, and the flag read could be a "busy" long over. Such producers notify, reading and
    writing no flag."""
    await add_endpoint(conn, receiver.url("/hook"))
    async with idle_relay(relay, conn) as rt:
        polls = rt.relay.wakeups["poll"]
        producer = await asyncpg.connect(dsn)
        try:
            async with producer.transaction(isolation="repeatable_read"):
                # The snapshot: the relay idle.
                assert await producer.fetchval(IDLE_ROW)
                await ops.enqueue(conn, "order.placed", {})  # wakes it; it goes idle again
                await receiver.wait_count(1, timeout=5)
                await wait_until(lambda: conn.fetchval(IDLE_ROW), timeout=5)
                await ops.enqueue(producer, "order.paid", {})
            await receiver.wait_count(2, timeout=5)  # the poll would take 60 s
        finally:
            await producer.close()
        assert rt.relay.wakeups["poll"] == polls


async def test_a_producer_that_fires_the_trigger_at_its_insert_holds_up_no_relay(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """SET CONSTRAINTS ALL IMMEDIATE fires the wake-up trigger at the INSERT: a producer that
    finds relays idle flips their rows and holds them to its own end, however long. The relay
    marking itself idle waited for that end (its claim loop stopped: events committed
    meanwhile waited too), and so did its heartbeat and other relays' reapers (their leases
    ran out). Now none of them waits, and producers wake the relay meanwhile."""
    await add_endpoint(conn, receiver.url("/hook"))
    async with idle_relay(relay, conn) as rt:
        polls = rt.relay.wakeups["poll"]
        loop = asyncio.get_running_loop()
        # A relay that died long ago, idle, for a reaper to remove.
        await conn.execute(
            "INSERT INTO courier.relays (id, hostname, pid, idle, seen_at)"
            " VALUES (gen_random_uuid(), 'gone', 1, true, now() - interval '1 hour')"
        )
        producer = await asyncpg.connect(dsn)
        took = []
        try:
            async with producer.transaction():
                await producer.execute("SET CONSTRAINTS ALL IMMEDIATE")
                await ops.enqueue(producer, "order.placed", {"n": 0})
                # It holds both rows now.
                locked = await conn.fetchval(
                    "SELECT count(*) FROM courier.relays"
                    " WHERE id NOT IN (SELECT id FROM courier.relays FOR UPDATE SKIP LOCKED)"
                )
                assert locked == 2
                for n in (1, 2, 3):
                    started = loop.time()
                    await ops.enqueue(conn, "order.paid", {"n": n})
                    await receiver.wait_count(n, timeout=5)
                    took.append(loop.time() - started)
                    await asyncio.sleep(0.2)  # the relay goes idle (or tries) after each
                store = rt.relay._store
                assert await asyncio.wait_for(store.heartbeat(rt.relay.id), 2)
                await asyncio.wait_for(store.reap(older_than=30), 2)
                # The dead relay's row waits for the next pass (a producer is flipping it).
                assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 2
            await receiver.wait_count(4, timeout=5)  # its own event, announced at its commit
        finally:
            await producer.close()
        assert max(took) < 2, took  # the poll is 60 s away; the transaction was held open
        assert rt.relay.wakeups["poll"] == polls
        await store.reap(older_than=30)
        assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 1


async def test_a_relay_whose_busy_row_is_held_looks_again_shortly_instead_of_waiting(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    """A transaction can hold a relay's row while its committed flag says busy: a producer
    whose FOR UPDATE SKIP LOCKED locked it just as another producer's flip to busy committed
    (the recheck drops the row, the lock stays to its end). Producers that read "busy" do not
    notify, and the relay cannot write "idle": it must neither wait for that transaction nor
    sleep until the poll, but look again shortly, until it can mark itself idle."""
    await add_endpoint(conn, receiver.url("/hook"))
    async with idle_relay(relay, conn) as rt:
        polls = rt.relay.wakeups["poll"]
        loop = asyncio.get_running_loop()
        await conn.execute("UPDATE courier.relays SET idle = false")  # a producer's flip
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM courier.relays FOR UPDATE")
                await conn.execute("SELECT pg_notify('courier_outbox', '')")  # its NOTIFY
                await asyncio.sleep(0.3)  # the relay tries to go idle, and cannot
                assert not await conn.fetchval(IDLE_ROW)
                started = loop.time()
                await ops.enqueue(conn, "order.paid", {"n": 1})  # reads busy: no NOTIFY
                await receiver.wait_count(1, timeout=5)
                took = loop.time() - started
            # Released: the relay marks itself idle at its next look, and NOTIFY works again.
            await wait_until(lambda: conn.fetchval(IDLE_ROW), timeout=5)
            await ops.enqueue(conn, "order.paid", {"n": 2})
            await receiver.wait_count(2, timeout=5)
        finally:
            await holder.close()
        assert took < 1, took  # the poll is 60 s away
        assert rt.relay.wakeups["poll"] == polls


async def test_the_reaper_never_removes_its_own_relay(
    conn: asyncpg.Connection, relay: Callable[..., Any]
) -> None:
    """A heartbeat skips a row another transaction holds, so a live relay's row can look stale
    after a long hold; its own lease keeper reaps right after its heartbeat."""
    async with idle_relay(relay, conn) as rt:  # idle: it writes its row no more
        await conn.execute("UPDATE courier.relays SET seen_at = now() - interval '1 hour'")
        store = rt.relay._store
        await store.reap(older_than=30, keep=rt.relay.id)
        assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 1
        await store.reap(older_than=30)  # another relay's reaper
        assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 0
