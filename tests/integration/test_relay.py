"""End to end on real Postgres and real HTTP: outbox -> relay -> signed webhook."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.errors import InvalidInput
from pgcourier.store import PgStore
from tests.integration.helpers import (
    Receiver,
    add_endpoint,
    assert_verified,
    statuses,
    wait_until,
)


async def test_committed_event_is_delivered_signed(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"), ["order.*"])
    async with conn.transaction():
        await conn.execute("CREATE TABLE orders (id int primary key, status text)")
        await conn.execute("INSERT INTO orders VALUES (42, 'paid')")
        event_id = await conn.fetchval(
            "SELECT courier.enqueue('order.paid', '{\"order_id\": 42}'::jsonb)"
        )
    async with relay():
        await receiver.wait_count(1)
    [request] = receiver.requests
    assert_verified(request, endpoint["secret"])
    assert request.webhook_id == str(event_id)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("pgcourier/")
    body = request.json
    assert body["id"] == str(event_id)
    assert body["type"] == "order.paid"
    assert body["data"] == {"order_id": 42}
    assert body["timestamp"].endswith("Z")
    assert await statuses(conn) == {"delivered": 1}
    attempt = await conn.fetchrow("SELECT * FROM courier.attempts")
    assert attempt["status_code"] == 200
    assert attempt["outcome"] == "delivered"
    assert attempt["attempt"] == 1
    assert attempt["duration_ms"] > 0


async def test_rolled_back_event_is_never_sent(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    tx = conn.transaction()
    await tx.start()
    await ops.enqueue(conn, "order.paid", {"order_id": 1})
    await tx.rollback()
    marker = await ops.enqueue(conn, "order.marker", {})
    async with relay():
        await receiver.wait_count(1)
        await asyncio.sleep(0.3)
    assert [r.json["type"] for r in receiver.requests] == ["order.marker"]
    assert receiver.requests[0].webhook_id == str(marker)
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 1


async def test_plain_insert_works_and_defaults_fill_the_rest(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    await conn.execute(
        "INSERT INTO courier.outbox (event_type, payload) VALUES ('user.created', '{\"id\": 7}')"
    )
    async with relay():
        await receiver.wait_count(1)
    assert receiver.requests[0].json["data"] == {"id": 7}


async def test_idempotency_key_dedupes(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    first = await ops.enqueue(conn, "order.paid", {"n": 1}, idempotency_key="pay-42")
    second = await ops.enqueue(conn, "order.paid", {"n": 2}, idempotency_key="pay-42")
    other = await ops.enqueue(conn, "order.paid", {"n": 3}, idempotency_key="pay-43")
    assert first == second != other
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 2
    async with relay():
        await receiver.wait_count(2)
        await asyncio.sleep(0.2)
    assert sorted(r.json["data"]["n"] for r in receiver.requests) == [1, 3]


async def test_fan_out_with_one_failing_endpoint(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    good_a = await add_endpoint(conn, receiver.url("/a"), ["order.*"])
    good_b = await add_endpoint(conn, receiver.url("/b"), ["order.paid"])
    await add_endpoint(conn, receiver.url("/broken"), ["*"])
    await add_endpoint(conn, receiver.url("/other"), ["invoice.*"])  # must not match
    receiver.default = 200
    receiver.script["/broken"] = [500] * 100
    ids = [str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(5)]
    async with relay(retry_schedule="50ms,50ms,50ms"):
        await receiver.wait_count(5, "/a")
        await receiver.wait_count(5, "/b")
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE status='dead'"),
        )
        await wait_until(lambda: _count_dead(conn, 5))
    assert set(receiver.ids("/a")) == set(ids) == set(receiver.ids("/b"))
    assert receiver.on("/other") == []
    # The broken endpoint was tried four times per event; the others once each.
    assert receiver.ids("/broken") == {i: 4 for i in ids}
    assert receiver.ids("/a") == {i: 1 for i in ids}
    for r in receiver.on("/a"):
        assert_verified(r, good_a["secret"])
    for r in receiver.on("/b"):
        assert_verified(r, good_b["secret"])
    assert await statuses(conn) == {"delivered": 10, "dead": 5}


async def _count_dead(conn: asyncpg.Connection, n: int) -> bool:
    return bool(
        await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE status = 'dead'") == n
    )


async def test_retry_then_success(conn: asyncpg.Connection, receiver: Receiver, relay: Any) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [503, 500]
    event_id = await ops.enqueue(conn, "order.paid", {})
    async with relay(retry_schedule="100ms,100ms,100ms"):
        await receiver.wait_count(3)
        await wait_until(lambda: _delivered(conn, 1))
    assert receiver.ids() == {str(event_id): 3}
    attempts = await conn.fetch(
        "SELECT attempt, status_code, outcome FROM courier.attempts ORDER BY attempt"
    )
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 503, "retry"),
        (2, 500, "retry"),
        (3, 200, "delivered"),
    ]
    row = await conn.fetchrow("SELECT attempts, status FROM courier.deliveries")
    assert (row["attempts"], row["status"]) == (3, "delivered")


async def _delivered(conn: asyncpg.Connection, n: int) -> bool:
    return bool(
        await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE status='delivered'") == n
    )


async def test_exhaustion_dead_letter_replay_same_webhook_id(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [500, 500, 500]
    event_id = await ops.enqueue(conn, "order.paid", {"x": 1})
    async with relay(retry_schedule="50ms,50ms"):
        await wait_until(lambda: _count_dead(conn, 1))
        [dead] = (await ops.list_dead(conn))["data"]
        assert dead["event_id"] == str(event_id)
        assert dead["attempts"] == 3
        assert dead["last_status_code"] == 500
        # The receiver is fixed (the script is used up); replay puts it back in line.
        assert await ops.replay_dead(conn, [dead["id"]]) == [dead["id"]]
        assert await ops.replay_dead(conn, [dead["id"]]) == []  # replaying twice queues once
        await wait_until(lambda: _delivered(conn, 1))
    assert receiver.ids() == {str(event_id): 4}
    for r in receiver.requests:
        assert_verified(r, endpoint["secret"])
    outcomes = await conn.fetch("SELECT attempt, outcome FROM courier.attempts ORDER BY id")
    assert [(o["attempt"], o["outcome"]) for o in outcomes] == [
        (1, "retry"),
        (2, "retry"),
        (3, "dead"),
        (4, "delivered"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM courier.dead_letters") == 0


async def test_replay_restarts_the_retry_schedule(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.default = 500
    await ops.enqueue(conn, "order.paid", {})
    async with relay(retry_schedule="50ms"):
        await wait_until(lambda: _count_dead(conn, 1))
        assert await ops.replay_dead(conn, None)
        await wait_until(lambda: _count_dead(conn, 1))
    # Two attempts before the first death, two more after the replay.
    assert len(receiver.requests) == 4


async def test_expired_lease_is_reclaimed_by_another_relay(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    ids = {str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(3)}
    # A relay that claims and then dies before sending anything (as after kill -9).
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        jobs = await PgStore(pool).claim(uuid.uuid4(), limit=10, lease=1.0)
    finally:
        await pool.close()
    assert len(jobs) == 3
    async with relay() as rt:
        await asyncio.sleep(0.4)
        assert receiver.requests == []  # leased elsewhere: not touched while the lease holds
        await receiver.wait_count(3, timeout=5)
        await wait_until(lambda: _delivered(conn, 3))
        # The relay counts a batch once its commit has returned, which the database shows
        # others first: on a busy machine this check ran in between (seen in CI).
        await wait_until(lambda: rt.relay.delivered >= 3)
        assert rt.relay.delivered == 3
    assert receiver.ids() == {i: 1 for i in ids}


async def test_two_relays_deliver_2000_events_exactly_once(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    # Room at the endpoint for both relays' full pipelines, so that both take part.
    await ops.create_endpoint(conn, url=receiver.url("/hook"), event_types=["*"], max_in_flight=200)
    await conn.execute(
        "SELECT courier.enqueue('bulk.event', jsonb_build_object('i', i)) "
        "FROM generate_series(1, 2000) AS i"
    )
    async with relay(max_in_flight=32) as one, relay(max_in_flight=32) as two:
        await receiver.wait_count(2000, timeout=60)
        await wait_until(lambda: _delivered(conn, 2000), timeout=30)
    counts = receiver.ids()
    assert len(counts) == 2000
    assert set(counts.values()) == {1}
    assert one.relay.delivered + two.relay.delivered == 2000
    assert one.relay.delivered > 0
    assert two.relay.delivered > 0
    assert await conn.fetchval("SELECT count(*) FROM courier.attempts") == 2000


async def test_notify_wakes_an_idle_relay_without_waiting_for_the_poll(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    async with relay(poll_interval=60) as rt:
        await wait_until(lambda: conn.fetchval("SELECT bool_and(idle) FROM courier.relays"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ops.enqueue(conn, "order.paid", {})
        await receiver.wait_count(1, timeout=5)
        assert loop.time() - started < 1.0  # the poll would take 60 s
        # Either NOTIFY woke it, or the event landed during the claim a relay makes right after
        # flagging itself idle (by design); never the poll.
        assert rt.relay.wakeups["poll"] == 0


async def test_a_long_transaction_wakes_a_relay_that_went_idle_before_its_commit(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    # The wake-up check runs at COMMIT (a deferred trigger). Run at INSERT it would read the
    # relays' flags too early: here no relay is idle when the event is inserted, one is by the
    # commit, and only a check at commit time wakes it (else it waits for its 60 s poll).
    await add_endpoint(conn, receiver.url("/hook"))
    producer = await asyncpg.connect(dsn)
    try:
        transaction = producer.transaction()
        await transaction.start()
        await producer.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
        async with relay(poll_interval=60) as rt:
            await wait_until(lambda: rt.listener.connected)
            await wait_until(lambda: conn.fetchval("SELECT bool_and(idle) FROM courier.relays"))
            await asyncio.sleep(0.3)  # past its last claim before sleeping
            loop = asyncio.get_running_loop()
            committed = loop.time()
            await transaction.commit()
            await receiver.wait_count(1, timeout=5)
            assert loop.time() - committed < 1.0
            assert rt.relay.wakeups["notify"] >= 1
    finally:
        await producer.close()


async def test_producers_notify_only_when_a_relay_is_idle(
    conn: asyncpg.Connection, dsn: str
) -> None:
    listener = await asyncpg.connect(dsn)
    got: list[str] = []
    await listener.add_listener("courier_outbox", lambda *args: got.append(args[2]))
    try:
        await ops.enqueue(conn, "a.b", {})  # no relay at all
        await conn.execute(
            "INSERT INTO courier.relays (id, hostname, pid, idle) VALUES ($1, 'h', 1, false)",
            uuid.uuid4(),
        )
        await ops.enqueue(conn, "a.b", {})  # a busy relay
        await asyncio.sleep(0.2)
        assert got == []
        await conn.execute("UPDATE courier.relays SET idle = true")
        async with conn.transaction():  # many rows, one notification
            for _ in range(5):
                await ops.enqueue(conn, "a.b", {})
        await wait_until(lambda: got)
        await asyncio.sleep(0.2)
        assert len(got) == 1
        # That producer claimed the wake-up: the relay is flagged busy, so nobody else notifies.
        assert await conn.fetchval("SELECT idle FROM courier.relays") is False
        await ops.enqueue(conn, "a.b", {})
        await asyncio.sleep(0.2)
        assert len(got) == 1
    finally:
        await listener.close()


async def test_relay_survives_its_listen_connection_being_killed(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    async with relay(poll_interval=60) as rt:
        await wait_until(lambda: rt.listener.connected)
        old_pid = rt.listener.backend_pid
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        await wait_until(lambda: rt.listener.connected and rt.listener.backend_pid != old_pid)
        assert rt.listener.reconnects >= 1
        await wait_until(lambda: conn.fetchval("SELECT bool_and(idle) FROM courier.relays"))
        await ops.enqueue(conn, "order.paid", {})
        await receiver.wait_count(1, timeout=5)  # woken by NOTIFY on the new connection


async def test_disabled_endpoint_holds_deliveries_until_enabled(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [500]
    await ops.enqueue(conn, "order.paid", {})
    async with relay(retry_schedule="300ms"):
        await receiver.wait_count(1)
        await ops.set_endpoint_enabled(conn, endpoint["id"], False)
        await asyncio.sleep(0.8)
        assert len(receiver.requests) == 1
        await ops.set_endpoint_enabled(conn, endpoint["id"], True)
        await receiver.wait_count(2, timeout=5)
        await wait_until(lambda: _delivered(conn, 1))


@pytest.mark.parametrize(
    ("http_client", "refused"),
    [
        ("aiohttp", "ClientConnectorError"),
        ("reqwest", "connection error: Connection refused"),
    ],
)
async def test_timeouts_and_connection_errors_are_recorded_failures(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, http_client: str, refused: str
) -> None:
    await add_endpoint(conn, receiver.url("/slow"))
    await add_endpoint(conn, "http://127.0.0.1:9/nothing-listens-here")
    receiver.delay["/slow"] = 3
    await ops.enqueue(conn, "order.paid", {})
    async with relay(retry_schedule="", delivery_timeout=0.3, lease=5, http_client=http_client):
        await wait_until(lambda: _count_dead(conn, 2), timeout=10)
    rows = await conn.fetch("SELECT error FROM courier.attempts")
    errors = {("timeout" if "timeout" in r["error"] else "refused"): r["error"] for r in rows}
    assert errors["refused"].startswith(refused)
    assert errors["timeout"] == "timeout after 0.3s"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT courier.enqueue('bad type', '{}')", "invalid event_type 'bad type'"),
        ("SELECT courier.enqueue('', '{}')", "invalid event_type ''"),
        ("SELECT courier.enqueue(NULL, '{}')", "invalid event_type NULL"),
        ("SELECT courier.enqueue('a.b', '[1,2]')", "payload must be a JSON object, got array"),
        ("SELECT courier.enqueue('a.b', 'null')", "payload must be a JSON object, got null"),
        ("SELECT courier.enqueue('a.b', NULL)", "payload must be a JSON object, got NULL"),
        (
            "SELECT courier.enqueue('a.b', jsonb_build_object('x', repeat('y', 300000)))",
            "over the limit of 262144 bytes",
        ),
        ("SELECT courier.enqueue('a.b', '{}', '')", "ordering_key must be 1-255 characters"),
        (
            "SELECT courier.enqueue('a.b', '{}', NULL, repeat('k', 256))",
            "idempotency_key must be 1-255 characters",
        ),
        (
            "INSERT INTO courier.outbox (event_type, payload) VALUES ('a b', '{}')",
            "invalid event_type",
        ),
    ],
)
async def test_bad_enqueue_input_is_refused_clearly(
    conn: asyncpg.Connection, sql: str, message: str
) -> None:
    with pytest.raises(asyncpg.PostgresError, match="courier: ") as info:
        await conn.execute(sql)
    assert message in str(info.value)
    assert info.value.sqlstate == "22023"
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0


async def test_payload_limit_follows_the_setting(conn: asyncpg.Connection, dsn: str) -> None:
    from pgcourier.runtime import prepare_schema
    from pgcourier.settings import Settings

    await prepare_schema(dsn, Settings(database_url=dsn, max_payload_bytes=100))
    await ops.enqueue(conn, "a.b", {"x": "y" * 50})
    with pytest.raises(InvalidInput, match="over the limit of 100 bytes") as info:
        await ops.enqueue(conn, "a.b", {"x": "y" * 100})
    assert info.value.field == "payload"


async def test_body_is_the_stored_json_unchanged(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    payload = {"unicode": "żółw 🐢", "nested": {"list": [1, 2.5, None, True]}, "big": 2**62}
    await ops.enqueue(conn, "a.b", payload)
    async with relay():
        await receiver.wait_count(1)
    assert receiver.requests[0].json["data"] == payload
    assert json.loads(receiver.requests[0].body)["type"] == "a.b"
