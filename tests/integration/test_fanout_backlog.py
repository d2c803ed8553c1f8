"""Fan-out keeps up while deliveries cannot: a backlog behind a slow endpoint never holds back
another endpoint's events.

Fan-out (courier.fan_out) takes events in commit order. It used to run only inside claims, a
batch of ~100 events each, and claims slow down when the work in hand is held back by an
endpoint's limit: thousands of events for a slow endpoint then took long to fan out, and an event
for any other endpoint committed after them waited all that time (issue 13's tenant flood).
"""

from __future__ import annotations

import asyncio

import asyncpg

from pgcourier import ops
from tests.integration.helpers import Receiver

FLOOD = 20_000


async def test_a_flood_for_a_slow_endpoint_does_not_delay_another_endpoints_event(
    conn: asyncpg.Connection, relay: object, receiver: Receiver
) -> None:
    receiver.delay["/slow"] = 0.5
    await ops.create_endpoint(
        conn, url=receiver.url("/slow"), event_types=["flood.*"], max_in_flight=2
    )
    await ops.create_endpoint(conn, url=receiver.url("/fast"), event_types=["single.*"])
    await conn.execute(
        "INSERT INTO courier.outbox (event_type, payload)"
        " SELECT 'flood.item', jsonb_build_object('n', n) FROM generate_series(1, $1) AS n",
        FLOOD,
    )
    async with relay():  # type: ignore[operator]
        await receiver.wait_count(1, "/slow", timeout=10)
        loop = asyncio.get_running_loop()
        await ops.enqueue(conn, "single.event", {"after": "the flood"})
        sent_at = loop.time()
        await receiver.wait_count(1, "/fast", timeout=30)
        waited = loop.time() - sent_at
    # The flood's fan-out (20,000 events, tens of milliseconds a thousand) comes first; then the
    # event goes out at once, whatever the slow endpoint holds.
    assert waited < 3.0, f"the event waited {waited:.1f}s behind the flood's fan-out"
