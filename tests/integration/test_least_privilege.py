"""The producer role of the README: it can add events and do nothing else."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from pgcourier import db, ops

README = Path(__file__).resolve().parents[2] / "README.md"


def producer_role_sql() -> str:
    """The SQL block that follows the ``<!-- producer-role -->`` marker in the README, so the
    test runs exactly what operators are told to run."""
    found = re.search(r"<!-- producer-role -->\s*```sql\n(.*?)```", README.read_text(), re.S)
    assert found, "README.md lost its producer-role snippet"
    return found.group(1)


@pytest.fixture
async def producer(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """``conn`` acting as ``courier_producer`` (a role is cluster-wide: dropped afterwards)."""
    await conn.execute(producer_role_sql())
    await conn.execute("SET ROLE courier_producer")
    try:
        yield conn
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute("DROP OWNED BY courier_producer")
        await conn.execute("DROP ROLE courier_producer")


async def test_the_producer_role_can_enqueue_and_insert(producer: asyncpg.Connection) -> None:
    await producer.execute("RESET ROLE")
    # An idle relay: the wake-up trigger flips its flag, which the producer itself cannot touch.
    relay = await producer.fetchval(
        "INSERT INTO courier.relays (id, hostname, pid, idle) "
        "VALUES (gen_random_uuid(), 'h', 1, true) RETURNING id"
    )
    await producer.execute("SET ROLE courier_producer")
    assert await producer.fetchval("SELECT current_user") == "courier_producer"

    first = await ops.enqueue(producer, "order.paid", {"order_id": 1})
    keyed = await ops.enqueue(producer, "order.paid", {"order_id": 2}, idempotency_key="k-2")
    again = await ops.enqueue(producer, "order.paid", {"order_id": 3}, idempotency_key="k-2")
    assert isinstance(first, uuid.UUID)
    assert again == keyed != first
    await producer.execute(
        "INSERT INTO courier.outbox (event_type, payload, ordering_key, idempotency_key) "
        "VALUES ('order.shipped', '{\"order_id\": 1}', 'order-1', 'k-3')"
    )
    # The rules still apply, with their message.
    with pytest.raises(asyncpg.InvalidParameterValueError, match="courier: invalid event_type"):
        await producer.execute("SELECT courier.enqueue('bad type', '{}'::jsonb)")

    await producer.execute("RESET ROLE")
    rows = await producer.fetch("SELECT event_type, payload::text FROM courier.outbox ORDER BY seq")
    assert [tuple(r) for r in rows] == [
        ("order.paid", '{"order_id": 1}'),
        ("order.paid", '{"order_id": 2}'),
        ("order.shipped", '{"order_id": 1}'),
    ]
    assert await producer.fetchval("SELECT idle FROM courier.relays WHERE id = $1", relay) is False


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM courier.endpoints",
        "SELECT secret FROM courier.endpoints",
        "SELECT * FROM courier.endpoint_public",
        "SELECT * FROM courier.outbox",
        "SELECT * FROM courier.deliveries",
        "SELECT * FROM courier.attempts",
        "SELECT * FROM courier.dead_letters",
        "SELECT * FROM courier.relays",
        "SELECT * FROM courier.config",
        "UPDATE courier.endpoints SET url = 'https://evil.example/'",
        "UPDATE courier.relays SET idle = false",
        "UPDATE courier.config SET max_payload_bytes = 100000000",
        "DELETE FROM courier.outbox",
        "INSERT INTO courier.outbox (event_type, payload) VALUES ('a.b', '{}') RETURNING id",
        # Backdating an event would decide which endpoints get it (0004).
        "INSERT INTO courier.outbox (event_type, payload, created_at) "
        "VALUES ('a.b', '{}', now() - interval '1 year')",
        "INSERT INTO courier.endpoints (url, event_types, secret) "
        "VALUES ('https://x.example/', '{*}', 'whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')",
        "SELECT * FROM courier.claim(10, 30, gen_random_uuid(), 10, 10)",
        "SELECT courier.poison_reason(10)",
        "SELECT courier.valid_event_type('a.b')",
        "SELECT courier.event_type_matches('{*}', 'a.b')",
        "SELECT courier.valid_headers('{}')",
    ],
)
async def test_the_producer_role_can_do_nothing_else(
    producer: asyncpg.Connection, statement: str
) -> None:
    await producer.execute("RESET ROLE")
    await ops.create_endpoint(producer, url="https://r.example/h", event_types=["*"])
    await producer.execute("SET ROLE courier_producer")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await producer.execute(statement)


async def test_definer_functions_run_with_a_fixed_search_path(conn: asyncpg.Connection) -> None:
    """A SECURITY DEFINER function that took the caller's search_path would run a caller's
    look-alike operator or function with the owner's rights."""
    rows = await conn.fetch(
        "SELECT p.proname, p.proconfig FROM pg_proc AS p "
        "WHERE p.pronamespace = 'courier'::regnamespace AND p.prosecdef ORDER BY 1"
    )
    assert [r["proname"] for r in rows] == [
        "enqueue",
        "outbox_require_registered_type",  # strict event types (0008)
        "outbox_validate",
        "outbox_wake",
    ]
    assert all(r["proconfig"] == ["search_path=pg_catalog, pg_temp"] for r in rows)


async def test_migrate_closes_every_courier_function_but_what_was_granted(
    producer: asyncpg.Connection,
) -> None:
    """Generic, so that a function a later migration adds is covered without naming it here."""
    await producer.execute("RESET ROLE")
    # What a later migration would do: a new function is executable by PUBLIC when created.
    await producer.execute(
        "CREATE FUNCTION courier.added_later() RETURNS int LANGUAGE sql RETURN 1"
    )
    await db.migrate(producer)
    callable_by = await producer.fetch(
        "SELECT p.oid::regprocedure::text AS f, "
        "has_function_privilege('public', p.oid, 'EXECUTE') AS public, "
        "has_function_privilege('courier_producer', p.oid, 'EXECUTE') AS producer "
        "FROM pg_proc AS p WHERE p.pronamespace = 'courier'::regnamespace"
    )
    # (courier.uuidv7() is the outbox id's default before Postgres 18: every inserting role
    # runs it. It reads and writes nothing.)
    assert [r["f"] for r in callable_by if r["public"]] == ["courier.uuidv7()"]
    assert sorted(r["f"] for r in callable_by if r["producer"]) == [
        "courier.enqueue(text,jsonb,text,text,text,uuid)",
        "courier.uuidv7()",
    ]
