"""PGCOURIER_EVENT_TYPES=strict: the database refuses unregistered event types, by every path."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.errors import InvalidInput
from pgcourier.runtime import prepare_schema
from pgcourier.settings import load_settings
from tests.integration.helpers import AUTH
from tests.integration.test_least_privilege import producer_role_sql

NOT_REGISTERED = "courier: event_type 'order.refunded' is not registered"


async def strict(conn: asyncpg.Connection) -> None:
    assert await ops.apply_event_types_mode(conn, "strict") is True
    await ops.create_event_type(conn, "order.paid")


async def count(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM courier.outbox")
    return n


async def test_strict_refuses_unregistered_types_via_enqueue_and_insert(
    conn: asyncpg.Connection,
) -> None:
    await strict(conn)
    with pytest.raises(asyncpg.InvalidParameterValueError, match=NOT_REGISTERED) as refused:
        await conn.execute("SELECT courier.enqueue('order.refunded', '{}'::jsonb)")
    assert refused.value.sqlstate == "22023"
    assert "register the type first" in (refused.value.hint or "")
    with pytest.raises(asyncpg.InvalidParameterValueError, match=NOT_REGISTERED):
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload) VALUES ('order.refunded', '{}')"
        )
    with pytest.raises(InvalidInput, match="is not registered") as translated:
        await ops.enqueue(conn, "order.refunded", {})
    assert translated.value.field == "event_type"
    assert await count(conn) == 0

    await conn.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
    await conn.execute(
        "INSERT INTO courier.outbox (event_type, payload) VALUES ('order.paid', '{}')"
    )
    await ops.enqueue(conn, "order.paid", {"a": 1}, idempotency_key="k")
    assert await count(conn) == 3


async def test_a_malformed_type_is_reported_as_malformed_first(conn: asyncpg.Connection) -> None:
    await strict(conn)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="courier: invalid event_type"):
        await conn.execute("SELECT courier.enqueue('bad type', '{}'::jsonb)")


async def test_switching_back_to_open_accepts_everything(conn: asyncpg.Connection) -> None:
    await strict(conn)
    assert await ops.event_types_strict(conn) is True
    assert await ops.apply_event_types_mode(conn, "strict") is False  # no change, no DDL
    assert await ops.apply_event_types_mode(conn, "open") is True
    assert await ops.event_types_strict(conn) is False
    assert await ops.apply_event_types_mode(conn, "open") is False
    await conn.execute("SELECT courier.enqueue('order.refunded', '{}'::jsonb)")
    await conn.execute("INSERT INTO courier.outbox (event_type, payload) VALUES ('x.y', '{}')")
    assert await count(conn) == 2
    with pytest.raises(InvalidInput):
        await ops.apply_event_types_mode(conn, "lenient")


async def test_migrate_applies_the_setting(dsn: str, conn: asyncpg.Connection) -> None:
    await prepare_schema(dsn, load_settings(database_url=dsn, event_types="STRICT"))
    assert await ops.event_types_strict(conn) is True
    await prepare_schema(dsn, load_settings(database_url=dsn))  # the default: open
    assert await ops.event_types_strict(conn) is False


async def test_the_api_names_the_field(api: Any, conn: asyncpg.Connection) -> None:
    await strict(conn)
    response = await api.post(
        "/api/v1/events", headers=AUTH, json={"event_type": "order.refunded", "payload": {}}
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"] == "event_type"
    assert "is not registered" in error["message"]
    response = await api.post(
        "/api/v1/events", headers=AUTH, json={"event_type": "order.paid", "payload": {}}
    )
    assert response.status == 201


async def test_deleting_a_type_in_strict_mode_retires_it(
    api: Any, conn: asyncpg.Connection
) -> None:
    await strict(conn)
    await ops.enqueue(conn, "order.paid", {})
    response = await api.delete("/api/v1/event-types/order.paid", headers=AUTH)
    assert await response.json() == {"deleted": "order.paid", "strict": True}
    with pytest.raises(asyncpg.InvalidParameterValueError, match="is not registered"):
        await conn.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
    assert await count(conn) == 1  # what was enqueued before stays, and is delivered


async def test_the_readme_producer_role_works_in_strict_mode(conn: asyncpg.Connection) -> None:
    """The check runs as its owner: a producer needs no privilege on the catalog."""
    await strict(conn)
    await conn.execute(producer_role_sql())
    await conn.execute("SET ROLE courier_producer")
    try:
        await conn.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload) VALUES ('order.paid', '{}')"
        )
        with pytest.raises(asyncpg.InvalidParameterValueError, match=NOT_REGISTERED):
            await conn.execute("SELECT courier.enqueue('order.refunded', '{}'::jsonb)")
        with pytest.raises(asyncpg.InvalidParameterValueError, match=NOT_REGISTERED):
            await conn.execute(
                "INSERT INTO courier.outbox (event_type, payload) VALUES ('order.refunded', '{}')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT * FROM courier.event_types")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO courier.event_types (name) VALUES ('order.refunded')")
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute("DROP OWNED BY courier_producer")
        await conn.execute("DROP ROLE courier_producer")
    assert await count(conn) == 2
