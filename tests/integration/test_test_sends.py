"""Test sends (issue 13, part 4): a signed example event to one endpoint through the normal
pipeline, the attempt returned, marked as a test, never reaching another endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from pgcourier import ops
from tests.integration.helpers import AUTH, Receiver, assert_verified, wait_until
from tests.integration.test_cli import pgcourier


async def test_api_test_send_reaches_that_endpoint_alone(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, api: Any
) -> None:
    target = await ops.create_endpoint(
        conn, url=receiver.url("/target"), event_types=["never.*"], tenant="acme"
    )
    # Endpoints that would take the event by pattern or tenant, were it not targeted.
    await ops.create_endpoint(conn, url=receiver.url("/everything"), event_types=["*"])
    await ops.create_endpoint(conn, url=receiver.url("/acme-too"), event_types=["*"], tenant="acme")
    async with relay():
        response = await api.post(f"/api/v1/endpoints/{target['id']}/test", headers=AUTH)
        assert response.status == 200
        sent = await response.json()
    assert sent["test"] is True
    assert sent["event_type"] == ops.TEST_EVENT_TYPE
    attempt = sent["attempt"]
    assert attempt["status_code"] == 200
    assert attempt["outcome"] == "delivered"
    assert attempt["response_body"] == "ok"
    assert attempt["duration_ms"] > 0
    assert attempt["error"] is None
    [request] = receiver.requests
    assert request.path == "/target"
    assert request.webhook_id == sent["event_id"]
    assert_verified(request, target["secret"])
    assert request.json["type"] == ops.TEST_EVENT_TYPE
    assert request.json["data"]["test"] is True
    # Marked as a test in the event and attempt listings; the event is the endpoint's tenant's.
    events = await (await api.get("/api/v1/events", headers=AUTH)).json()
    [event] = events["data"]
    assert (event["test"], event["tenant"], event["endpoint_id"]) == (True, "acme", target["id"])
    attempts = await (
        await api.get(f"/api/v1/events/{sent['event_id']}/attempts", headers=AUTH)
    ).json()
    assert [a["test"] for a in attempts["data"]] == [True]
    other = await ops.enqueue(conn, "a.b", {})
    assert (await ops.get_event(conn, str(other)))["test"] is False


async def test_a_failing_endpoint_shows_the_failed_attempt(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, api: Any
) -> None:
    target = await ops.create_endpoint(conn, url=receiver.url("/down"), event_types=["*"])
    receiver.script["/down"] = [503]
    async with relay(retry_schedule="1h"):
        response = await api.post(
            f"/api/v1/endpoints/{target['id']}/test",
            headers=AUTH,
            json={"event_type": "invoice.paid"},
        )
        sent = await response.json()
    assert response.status == 200
    assert sent["event_type"] == "invoice.paid"
    assert sent["attempt"]["status_code"] == 503
    assert sent["attempt"]["outcome"] == "retry"
    assert sent["attempt"]["response_body"] == "nope"
    # No answer at all: the error says why.
    closed = await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    async with relay(retry_schedule="1h"):
        response = await api.post(f"/api/v1/endpoints/{closed['id']}/test", headers=AUTH)
        sent = await response.json()
    assert response.status == 200
    assert sent["attempt"]["status_code"] is None
    assert sent["attempt"]["error"]


async def test_without_a_relay_the_reply_says_so(
    conn: asyncpg.Connection, receiver: Receiver, api: Any, dsn: str
) -> None:
    target = await ops.create_endpoint(conn, url=receiver.url("/t"), event_types=["*"])
    response = await api.post(
        f"/api/v1/endpoints/{target['id']}/test", headers=AUTH, json={"wait_seconds": 0.3}
    )
    assert response.status == 202
    sent = await response.json()
    assert sent["attempt"] is None
    assert "no relay picked it up within 0.3s" in sent["message"]
    # The CLI says it on stderr, prints the result, and exits 0: the event is queued.
    code, out, err = await pgcourier("endpoint", "test", target["id"], "--wait", "0.3", dsn=dsn)
    assert code == 0
    assert json.loads(out)["attempt"] is None
    assert "no relay picked it up" in err
    # Queued, targeted, marked: nothing else.
    rows = await conn.fetch("SELECT endpoint_id, test FROM courier.outbox")
    assert [(str(r["endpoint_id"]), r["test"]) for r in rows] == [(target["id"], True)] * 2
    # A disabled endpoint: no waiting, the reply says the event is held.
    await ops.set_endpoint_enabled(conn, target["id"], False)
    response = await api.post(f"/api/v1/endpoints/{target['id']}/test", headers=AUTH)
    assert response.status == 202
    assert "disabled" in (await response.json())["message"]


async def test_cli_test_send_with_a_type(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, dsn: str
) -> None:
    target = await ops.create_endpoint(conn, url=receiver.url("/cli"), event_types=["x.*"])
    bystander = await ops.create_endpoint(conn, url=receiver.url("/other"), event_types=["*"])
    async with relay():
        code, out, err = await pgcourier(
            "endpoint", "test", target["id"], "--type", "order.paid", dsn=dsn
        )
        assert code == 0, err
        sent = json.loads(out)
        assert sent["attempt"]["status_code"] == 200
        assert [r.path for r in receiver.requests] == ["/cli"]
        assert receiver.requests[0].json["type"] == "order.paid"
        code, out, err = await pgcourier("endpoint", "test", target["id"], dsn=dsn, text=True)
        assert code == 0, err
        assert "200" in out
        await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM courier.queue"))
    assert not receiver.on("/other")
    stats = await ops.endpoint_stats(conn, bystander["id"])
    assert stats["attempts"] == 0
    code, _, err = await pgcourier("endpoint", "test", target["id"], "--type", "bad type", dsn=dsn)
    assert code == 1
    assert "not an event type" in err


async def test_waiting_holds_no_pooled_connection(
    conn: asyncpg.Connection, receiver: Receiver, api: Any
) -> None:
    """In `pgcourier run` the API shares the relay's small pool: test sends waiting for an
    attempt must leave its connections free (the api fixture's pool has two)."""
    target = await ops.create_endpoint(conn, url=receiver.url("/t"), event_types=["*"])

    async def wait_for_nothing() -> int:
        response = await api.post(
            f"/api/v1/endpoints/{target['id']}/test", headers=AUTH, json={"wait_seconds": 2}
        )
        status: int = response.status
        return status

    waiting = [asyncio.create_task(wait_for_nothing()) for _ in range(3)]
    await asyncio.sleep(0.5)  # all three are waiting now
    started = time.monotonic()
    listed = await api.get("/api/v1/endpoints", headers=AUTH)
    assert listed.status == 200
    assert time.monotonic() - started < 1.0
    assert await asyncio.gather(*waiting) == [202, 202, 202]


async def test_a_test_send_carries_the_catalogs_example_and_passes_strict_mode(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, api: Any
) -> None:
    target = await ops.create_endpoint(conn, url=receiver.url("/target"), event_types=["*"])
    example = {"invoice": "in_1", "amount": 1200}
    await ops.create_event_type(conn, "invoice.paid", example=example)
    # Strict mode refuses unregistered types from producers, not an operator's test send.
    await ops.apply_event_types_mode(conn, "strict")
    async with relay():
        for event_type in ("invoice.paid", ops.TEST_EVENT_TYPE):
            response = await api.post(
                f"/api/v1/endpoints/{target['id']}/test",
                headers=AUTH,
                json={"event_type": event_type},
            )
            assert response.status == 200, await response.text()
    first, second = receiver.on("/target")
    assert first.json["data"] == example
    assert second.json["data"]["test"] is True  # no catalog entry: the built-in example
