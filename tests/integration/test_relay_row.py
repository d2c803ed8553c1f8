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
