"""Which endpoints an event is fanned out to: matching patterns, and only endpoints that existed
when the event was created (a new endpoint is not sent older history, as with Svix and Stripe)."""

from __future__ import annotations

from pgcourier import ops
from tests.integration.helpers import Receiver, add_endpoint, wait_until


async def test_a_new_endpoint_gets_only_events_created_after_it(
    conn, receiver: Receiver, relay
) -> None:
    old_endpoint = await add_endpoint(conn, receiver.url("/old"))
    before = await ops.enqueue(conn, "order.paid", {"n": 1})
    # The event above is not fanned out yet (no relay runs): the old rule joined every endpoint
    # existing at fan-out time, so this endpoint would have received it too.
    new_endpoint = await add_endpoint(conn, receiver.url("/new"))
    after = await ops.enqueue(conn, "order.paid", {"n": 2})
    async with relay():
        await receiver.wait_count(3)
        # Give a wrong fan-out a chance to show: every delivery is written by now.
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM courier.outbox WHERE fanned_out_at IS NULL"
            )
        )
    assert sorted(receiver.ids("/old").elements()) == sorted([str(before), str(after)])
    assert list(receiver.ids("/new").elements()) == [str(after)]
    rows = await conn.fetch("SELECT event_id, endpoint_id FROM courier.deliveries")
    assert sorted((str(r["event_id"]), str(r["endpoint_id"])) for r in rows) == sorted(
        [
            (str(before), str(old_endpoint["id"])),
            (str(after), str(old_endpoint["id"])),
            (str(after), str(new_endpoint["id"])),
        ]
    )
