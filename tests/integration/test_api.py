"""/api/v1 over real Postgres: auth, endpoints, dead letters, and errors that name the field."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from tests.integration.helpers import AUTH, TOKEN, Receiver, add_endpoint, wait_until


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_api_needs_the_bearer_token(api: Any, headers: Any) -> None:
    response = await api.get("/api/v1/endpoints", headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_health_stays_open_with_a_token(api: Any) -> None:
    assert (await api.get("/health")).status == 200


async def test_endpoint_lifecycle(api: Any) -> None:
    response = await api.post(
        "/api/v1/endpoints",
        headers=AUTH,
        json={"url": "https://example.com/hook", "event_types": ["order.*"], "description": "d"},
    )
    assert response.status == 201
    created = await response.json()
    assert created["secret"].startswith("whsec_")
    listed = (await (await api.get("/api/v1/endpoints", headers=AUTH)).json())["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    one = await (await api.get(f"/api/v1/endpoints/{created['id']}", headers=AUTH)).json()
    assert one["url"] == "https://example.com/hook"
    assert "secret" not in one
    response = await api.patch(
        f"/api/v1/endpoints/{created['id']}", headers=AUTH, json={"enabled": False}
    )
    assert response.status == 200
    assert (await response.json())["enabled"] is False


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"url": "ftp://x", "event_types": ["a"]}, 422, "url"),
        ({"url": "https://x", "event_types": []}, 422, "event_types"),
        ({"url": "https://x", "event_types": ["a b"]}, 422, "event_types.0"),
        ({"url": "https://x", "event_types": ["a"], "colour": "red"}, 422, "colour"),
        ({"url": 5, "event_types": ["a"]}, 422, "url"),
        ({"event_types": ["a"]}, 422, "url"),
        ({"url": "https://x", "event_types": ["a"], "secret": "nope"}, 422, "secret"),
    ],
)
async def test_bad_endpoint_input_is_a_4xx_naming_the_field(
    api: Any, conn: asyncpg.Connection, body: Any, status: Any, field: Any
) -> None:
    response = await api.post("/api/v1/endpoints", headers=AUTH, json=body)
    assert response.status == status
    error = (await response.json())["error"]
    assert error["field"] == field
    assert error["code"] == "invalid"
    assert error["message"]
    assert await conn.fetchval("SELECT count(*) FROM courier.endpoints") == 0


async def test_malformed_json_unknown_ids_and_routes(api: Any) -> None:
    response = await api.post(
        "/api/v1/endpoints", headers={**AUTH, "Content-Type": "application/json"}, data=b"{nope"
    )
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "body"
    for path, status, field in [
        ("/api/v1/endpoints/not-a-uuid", 422, "endpoint_id"),
        ("/api/v1/endpoints/00000000-0000-0000-0000-000000000000", 404, None),
        ("/api/v1/nothing-here", 404, None),
        ("/api/v1/dead-letters?limit=lots", 422, "limit"),
        ("/api/v1/dead-letters?limit=0", 422, "limit"),
    ]:
        response = await api.get(path, headers=AUTH)
        assert response.status == status, path
        assert (await response.json())["error"]["field"] == field
    response = await api.delete("/api/v1/endpoints", headers=AUTH)
    assert response.status == 405
    assert "error" in await response.json()


async def test_dead_letters_replay_one_and_bulk_idempotently(
    api: Any, conn: asyncpg.Connection
) -> None:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    for _ in range(3):
        await ops.enqueue(conn, "a.b", {})
    # Dead deliveries made by hand: no relay is needed to test the replay routes.
    await conn.execute(
        "INSERT INTO courier.dead_letters (event_id, endpoint_id, dead_at)"
        " SELECT o.id, e.id, now() FROM courier.outbox o, courier.endpoints e"
    )
    dead = (await (await api.get("/api/v1/dead-letters", headers=AUTH)).json())["data"]
    assert len(dead) == 3
    first = dead[0]["id"]
    response = await api.post(f"/api/v1/dead-letters/{first}/replay", headers=AUTH)
    assert (await response.json()) == {"replayed": [first], "count": 1}
    response = await api.post(f"/api/v1/dead-letters/{first}/replay", headers=AUTH)
    assert response.status == 404  # no longer dead: replaying twice does not queue twice
    response = await api.post("/api/v1/dead-letters/replay", headers=AUTH, json={})
    assert (await response.json())["count"] == 2
    response = await api.post("/api/v1/dead-letters/replay", headers=AUTH)
    assert (await response.json())["count"] == 0
    assert (
        await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE status = 'pending'") == 3
    )


async def test_events_post_list_paginate_and_filter(api: Any, conn: asyncpg.Connection) -> None:
    ids = []
    for i in range(5):
        response = await api.post(
            "/api/v1/events",
            headers=AUTH,
            json={"event_type": "order.paid" if i % 2 else "user.created", "payload": {"i": i}},
        )
        assert response.status == 201
        ids.append((await response.json())["id"])
    again = await api.post(
        "/api/v1/events",
        headers=AUTH,
        json={"event_type": "order.paid", "payload": {}, "idempotency_key": "k"},
    )
    same = await api.post(
        "/api/v1/events",
        headers=AUTH,
        json={"event_type": "order.paid", "payload": {"other": 1}, "idempotency_key": "k"},
    )
    assert (await again.json())["id"] == (await same.json())["id"]
    seen, cursor = [], None
    while True:
        query = "/api/v1/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(query, headers=AUTH)).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6  # every event once, across pages
    assert set(ids) <= set(seen)
    only = await (await api.get("/api/v1/events?type=user.created", headers=AUTH)).json()
    assert [e["payload"]["i"] for e in only["data"]] == [4, 2, 0]  # newest first


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=garbage", "cursor"),
        ("since=yesterday", "since"),
        ("since=2026-01-01T00:00:00", "since"),
        ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ("limit=5000", "limit"),
    ],
)
async def test_bad_event_filters_name_the_field(api: Any, query: Any, field: Any) -> None:
    response = await api.get(f"/api/v1/events?{query}", headers=AUTH)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_type": "bad type", "payload": {}}, "event_type"),
        ({"event_type": "a.b", "payload": [1]}, "payload"),
        ({"event_type": "a.b"}, "payload"),
        ({"event_type": "a.b", "payload": {}, "extra": 1}, "extra"),
    ],
)
async def test_bad_events_change_nothing(
    api: Any, conn: asyncpg.Connection, body: Any, field: Any
) -> None:
    response = await api.post("/api/v1/events", headers=AUTH, json=body)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0


async def test_event_detail_and_attempts_after_real_delivery(
    api: Any, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [503]
    event_id = str(await ops.enqueue(conn, "order.paid", {"n": 1}))
    async with relay(retry_schedule="50ms"):
        await wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 1 FROM courier.deliveries WHERE status = 'delivered'"
            )
        )
    detail = await (await api.get(f"/api/v1/events/{event_id}", headers=AUTH)).json()
    assert detail["payload"] == {"n": 1}
    [delivery] = detail["deliveries"]
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 2
    attempts = (await (await api.get(f"/api/v1/events/{event_id}/attempts", headers=AUTH)).json())[
        "data"
    ]
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 503, "retry"),
        (2, 200, "delivered"),
    ]
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await api.get(f"/api/v1/events/{missing}/attempts", headers=AUTH)).status == 404


# The API as the README describes it, written out by hand: the document and the router are both
# built from one route table, so comparing them with each other alone could not catch a route
# missing from, or misspelt in, that table.
EXPECTED_ROUTES = {
    ("POST", "/api/v1/endpoints"),
    ("GET", "/api/v1/endpoints"),
    ("GET", "/api/v1/endpoints/{id}"),
    ("PATCH", "/api/v1/endpoints/{id}"),
    ("DELETE", "/api/v1/endpoints/{id}"),
    ("POST", "/api/v1/endpoints/{id}/rotate-secret"),
    ("GET", "/api/v1/endpoints/{id}/stats"),
    ("POST", "/api/v1/endpoints/{id}/recover"),
    ("POST", "/api/v1/events"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/{id}"),
    ("GET", "/api/v1/events/{id}/attempts"),
    ("GET", "/api/v1/dead-letters"),
    ("POST", "/api/v1/dead-letters/replay"),
    ("GET", "/api/v1/dead-letters/{id}"),
    ("DELETE", "/api/v1/dead-letters/{id}"),
    ("POST", "/api/v1/dead-letters/{id}/replay"),
    ("POST", "/api/v1/endpoints/{id}/test"),
    ("GET", "/api/v1/tenants/{tenant}/stats"),
    ("POST", "/api/v1/verify"),
    ("GET", "/api/v1/event-types"),
    ("POST", "/api/v1/event-types"),
    ("GET", "/api/v1/event-types/{name}"),
    ("PATCH", "/api/v1/event-types/{name}"),
    ("DELETE", "/api/v1/event-types/{name}"),
}


async def test_openapi_document_matches_the_routes(api: Any) -> None:
    response = await api.get("/openapi.json")  # open, like /health
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops_ in doc["paths"].items() for method in ops_}
    assert documented == EXPECTED_ROUTES
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1")
        and route.method != "HEAD"
    }
    assert served == EXPECTED_ROUTES
    # And each one reaches a handler: an answer of the handler's (2xx, or a 4xx naming what is
    # wrong or missing), never the router's bare 404 or 405.
    for method, path in sorted(EXPECTED_ROUTES):
        sample = "12345" if path.startswith("/api/v1/dead-letters/") else str(uuid.uuid4())
        body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
        url = (
            path.replace("{id}", sample).replace("{tenant}", "acme").replace("{name}", "order.paid")
        )
        response = await api.request(method, url, headers=AUTH, json=body)
        answer = await response.json()
        assert response.status != 405, (method, path)
        assert response.status < 500, (method, path, answer)
        if response.status == 404:
            assert answer["error"]["message"] != "Not Found", (method, path)
    create = doc["components"]["schemas"]["EndpointCreate"]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"event_types"}  # url is required of webhooks only
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
