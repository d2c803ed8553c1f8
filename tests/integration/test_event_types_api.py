"""/api/v1/event-types over real Postgres and HTTP, and POST /events checked against the schemas."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.integration.helpers import AUTH

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {
        "order_id": {"type": "integer"},
        "amount": {"type": "number", "minimum": 0},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}},
            },
        },
    },
}
EXAMPLE = {"order_id": 42, "amount": 9.5, "items": [{"sku": "A-1"}]}


async def post(api: Any, path: str, body: Any) -> tuple[int, Any]:
    response = await api.post(path, headers=AUTH, json=body)
    return response.status, await response.json()


async def register(api: Any, **body: Any) -> dict[str, Any]:
    status, reply = await post(api, "/api/v1/event-types", body)
    assert status == 201, reply
    return reply  # type: ignore[no-any-return]


async def test_crud(api: Any) -> None:
    created = await register(
        api,
        name="order.paid",
        description="An order was paid.",
        schema=ORDER_SCHEMA,
        example=EXAMPLE,
    )
    assert created["name"] == "order.paid"
    assert created["schema"] == ORDER_SCHEMA
    assert created["example"] == EXAMPLE
    await register(api, name="order.shipped")
    listed = (await (await api.get("/api/v1/event-types", headers=AUTH)).json())["data"]
    assert [t["name"] for t in listed] == ["order.paid", "order.shipped"]
    assert listed[1] | {"created_at": None, "updated_at": None} == {
        "name": "order.shipped",
        "description": "",
        "schema": None,
        "example": None,
        "created_at": None,
        "updated_at": None,
    }
    one = await (await api.get("/api/v1/event-types/order.paid", headers=AUTH)).json()
    assert one == created

    response = await api.patch(
        "/api/v1/event-types/order.paid",
        headers=AUTH,
        json={"description": "Paid.", "example": None},
    )
    assert response.status == 200
    patched = await response.json()
    assert (patched["description"], patched["schema"], patched["example"]) == (
        "Paid.",
        ORDER_SCHEMA,
        None,
    )
    assert patched["updated_at"] > created["updated_at"]

    response = await api.delete("/api/v1/event-types/order.paid", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"deleted": "order.paid", "strict": False}
    assert (await api.get("/api/v1/event-types/order.paid", headers=AUTH)).status == 404
    assert (await api.delete("/api/v1/event-types/order.paid", headers=AUTH)).status == 404
    assert (
        await api.patch("/api/v1/event-types/nope", headers=AUTH, json={"description": ""})
    ).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "a.b", "description": "x" * 1001}, "description"),
        ({"name": "a.b", "schema": {"type": "nope"}}, "schema.type"),
        (
            {"name": "a.b", "schema": {"properties": {"a": {"pattern": "("}}}},
            "schema.properties.a.pattern",
        ),
        ({"name": "a.b", "schema": {"$ref": "https://example.com/s.json"}}, "schema.$ref"),
        ({"name": "a.b", "schema": "object"}, "schema"),
        ({"name": "a.b", "example": [1]}, "example"),
        ({"name": "a.b", "schema": ORDER_SCHEMA, "example": {"order_id": 1}}, "example.amount"),
        (
            {"name": "a.b", "schema": ORDER_SCHEMA, "example": {**EXAMPLE, "items": [{}]}},
            "example.items.0.sku",
        ),
        ({"name": "a.b", "colour": "red"}, "colour"),
    ],
)
async def test_create_refuses_bad_input_naming_the_field(
    api: Any, conn: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    status, reply = await post(api, "/api/v1/event-types", body)
    assert status == 422, reply
    assert reply["error"]["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM courier.event_types") == 0


async def test_a_name_is_registered_once(api: Any) -> None:
    await register(api, name="a.b")
    status, reply = await post(api, "/api/v1/event-types", {"name": "a.b"})
    assert (status, reply["error"]["field"]) == (422, "name")
    assert "already registered" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "body"),
        ({"description": None}, 422, "description"),
        ({"example": {"order_id": "x", "amount": 1}}, 422, "example.order_id"),
        ({"schema": {"type": "object", "required": ["other"]}}, 422, "example.other"),
        ({"name": "c.d"}, 422, "name"),
    ],
)
async def test_update_refuses_bad_input_and_changes_nothing(
    api: Any, body: dict[str, Any], status: int, field: str | None
) -> None:
    before = await register(api, name="a.b", schema=ORDER_SCHEMA, example=EXAMPLE)
    response = await api.patch("/api/v1/event-types/a.b", headers=AUTH, json=body)
    assert response.status == status
    if field is not None:
        assert (await response.json())["error"]["field"] == field
    assert await (await api.get("/api/v1/event-types/a.b", headers=AUTH)).json() == before


async def test_removing_the_schema_keeps_any_example(api: Any) -> None:
    await register(api, name="a.b", schema=ORDER_SCHEMA, example=EXAMPLE)
    response = await api.patch("/api/v1/event-types/a.b", headers=AUTH, json={"schema": None})
    assert (await response.json())["schema"] is None
    # No schema now: any payload goes.
    status, _ = await post(api, "/api/v1/events", {"event_type": "a.b", "payload": {"x": 1}})
    assert status == 201


async def test_bad_names_in_the_path(api: Any) -> None:
    response = await api.get("/api/v1/event-types/-bad", headers=AUTH)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "name"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"order_id": 1}, "payload.amount"),
        ({"order_id": 1, "amount": "9"}, "payload.amount"),
        ({"order_id": 1, "amount": -1}, "payload.amount"),
        ({"order_id": 1, "amount": 1, "items": [{"sku": 5}]}, "payload.items.0.sku"),
        ({"order_id": 1, "amount": 1, "items": [{}]}, "payload.items.0.sku"),
    ],
)
async def test_events_are_checked_against_the_schema(
    api: Any, conn: asyncpg.Connection, payload: dict[str, Any], field: str
) -> None:
    await register(api, name="order.paid", schema=ORDER_SCHEMA)
    status, reply = await post(
        api, "/api/v1/events", {"event_type": "order.paid", "payload": payload}
    )
    assert status == 422, reply
    assert reply["error"]["field"] == field
    assert "order.paid" in reply["error"]["message"]
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0
    status, _ = await post(api, "/api/v1/events", {"event_type": "order.paid", "payload": EXAMPLE})
    assert status == 201
    # Types without a schema, and unregistered types (open mode), are not checked.
    status, _ = await post(api, "/api/v1/events", {"event_type": "other.thing", "payload": payload})
    assert status == 201


async def test_a_changed_schema_applies_at_once(api: Any) -> None:
    """The compiled validator is cached by the schema's fingerprint, never served stale."""
    await register(api, name="a.b", schema={"type": "object", "required": ["x"]})
    event = {"event_type": "a.b", "payload": {"y": 1}}
    assert (await post(api, "/api/v1/events", event))[0] == 422
    await api.patch(
        "/api/v1/event-types/a.b",
        headers=AUTH,
        json={"schema": {"type": "object", "required": ["y"]}},
    )
    assert (await post(api, "/api/v1/events", event))[0] == 201
    await api.patch("/api/v1/event-types/a.b", headers=AUTH, json={"schema": False})
    status, reply = await post(api, "/api/v1/events", event)
    assert (status, reply["error"]["field"]) == (422, "payload")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a.b", "description": "nul\u0000"}, "description"),
        ({"name": "a.b", "schema": {"description": "nul\u0000"}}, "schema"),
        ({"name": "a.b", "example": {"k\u0000": 1}}, "example"),
    ],
)
async def test_nul_characters_are_refused_naming_the_field(
    api: Any, body: dict[str, Any], field: str
) -> None:
    status, reply = await post(api, "/api/v1/event-types", body)
    assert (status, reply["error"]["field"]) == (422, field)


async def test_a_schema_written_around_pgcourier_is_reported(
    api: Any, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO courier.event_types (name, schema) VALUES ('a.b', '{\"type\": 5}')"
    )
    status, reply = await post(api, "/api/v1/events", {"event_type": "a.b", "payload": {}})
    assert (status, reply["error"]["field"]) == (422, "event_type")
    assert "event-types update" in reply["error"]["message"]
