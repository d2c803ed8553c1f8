"""The relay's row in courier.relays, through which producers know whom to notify.

The table is UNLOGGED: a crash restart empties it. A relay whose row is gone is never notified
(producers notify only relays flagged idle), so whatever the relay writes about itself must put
the row back, and an idle relay must go on being woken by NOTIFY, not by its poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from pgcourier import ops
from tests.integration.helpers import Receiver, add_endpoint, wait_until

IDLE_ROW = "SELECT coalesce(bool_and(idle), false) FROM courier.relays"


async def test_marking_itself_idle_puts_back_a_vanished_row(
    conn: asyncpg.Connection, receiver: Receiver, relay: Callable[..., Any]
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    # A long lease: the heartbeat (every 10 s) would register the relay again; this checks
    # that going idle does it by itself.
    async with relay(poll_interval=60, lease=120) as rt:
        await wait_until(lambda: rt.listener.connected)
        await wait_until(lambda: conn.fetchval(IDLE_ROW))
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
    async with relay(poll_interval=60, lease=120) as rt:
        await wait_until(lambda: rt.listener.connected)
        await wait_until(lambda: conn.fetchval(IDLE_ROW))
        polls = rt.relay.wakeups["poll"]
        loop = asyncio.get_running_loop()
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                # What the heartbeat's UPDATE, or a flipping producer, does to the row.
                await holder.execute("SELECT 1 FROM courier.relays FOR UPDATE")
                started = loop.time()
                await ops.enqueue(conn, "order.paid", {})
                await receiver.wait_count(1, timeout=5)
                waited = loop.time() - started
        finally:
            await holder.close()
        assert waited < 5  # the poll would take 60 s
        assert rt.relay.wakeups["poll"] == polls
