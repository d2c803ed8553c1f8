"""The console's part of issue 13 over HTTP: tenants on the endpoint, event and dead-letter
pages (the filters flowing through the same operations as the API), and "Send a test event".

(A sibling of test_console.py, which is near the size a module should stay under.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.metrics import Metrics
from tests.integration.console_helpers import HOSTILE, csrf_for, login, text_of
from tests.integration.helpers import TOKEN, Receiver, assert_verified, statuses, wait_until
from tests.integration.test_console_fuzz import csrf


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def ui(aiohttp_client: Any, pool: asyncpg.Pool) -> Any:
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics(), None, TOKEN)))
    await login(client)
    return client


@pytest.fixture
async def tenants(conn: Any, receiver: Receiver, relay: Any) -> dict[str, Any]:
    """Endpoints of tenants acme and globex and one of none (which fails: every event it takes
    goes dead at once); two acme events and three globex ones, delivered by a real relay."""
    acme = await ops.create_endpoint(
        conn, url=receiver.url("/acme"), event_types=["invoice.*"], tenant="acme"
    )
    globex = await ops.create_endpoint(
        conn, url=receiver.url("/globex"), event_types=["invoice.*"], tenant="globex"
    )
    audit = await ops.create_endpoint(conn, url=receiver.url("/audit"), event_types=["invoice.*"])
    receiver.script["/audit"] = [500] * 50
    events = {
        "acme": [await ops.enqueue(conn, "invoice.paid", {"n": i}, tenant="acme") for i in (1, 2)],
        "globex": [
            await ops.enqueue(conn, "invoice.paid", {"n": i}, tenant="globex") for i in (3, 4, 5)
        ],
    }
    async with relay(retry_schedule="", circuit_failures=100):

        async def settled() -> bool:
            return (await statuses(conn)).get("dead", 0) == 5

        await wait_until(settled)
        await receiver.wait_count(2, "/acme")
        await receiver.wait_count(3, "/globex")
    return {"acme": acme, "globex": globex, "audit": audit, "events": events}


def shown(page: str) -> str:
    """What a reader sees of ``page``, runs of spaces made one."""
    return " ".join(text_of(page).split())


async def dead_tenants(conn: Any) -> list[str]:
    rows = await conn.fetch(
        "SELECT o.tenant FROM courier.dead_letters AS d"
        " JOIN courier.outbox AS o ON o.id = d.event_id ORDER BY 1"
    )
    return [r["tenant"] for r in rows]


async def test_endpoints_show_their_tenant_and_filter_by_it(ui: Any, tenants: Any) -> None:
    page = await (await ui.get("/ui/endpoints")).text()
    assert "<th>Tenant</th>" in page
    for tenant in ("acme", "globex"):
        assert f"/ui/endpoints?tenant={tenant}&amp;window=1h" in page
    # Filtered: that tenant's endpoints alone, and its stats (the API's tenant_stats).
    response = await ui.get("/ui/endpoints", params={"tenant": "acme", "window": "24h"})
    page = await response.text()
    assert response.status == 200
    assert "/acme" in page
    assert "/globex" not in page
    assert "/audit" not in page
    assert "endpoints of tenant acme" in shown(page)
    assert "success (2 attempts)" in shown(page)  # the tenant's two deliveries
    # The endpoint's page says its tenant, or that it has none.
    page = await (await ui.get(f"/ui/endpoints/{tenants['acme']['id']}")).text()
    assert "Tenant acme receives only this tenant's events" in shown(page)
    page = await (await ui.get(f"/ui/endpoints/{tenants['audit']['id']}")).text()
    assert "Tenant none: receives matching events of every tenant" in shown(page)


async def test_events_filter_by_tenant(ui: Any, tenants: Any) -> None:
    acme = [str(e) for e in tenants["events"]["acme"]]
    globex = [str(e) for e in tenants["events"]["globex"]]
    page = await (await ui.get("/ui/events")).text()
    assert "<th>Tenant</th>" in page
    assert all(e in page for e in acme + globex)
    response = await ui.get("/ui/events", params={"tenant": "acme", "type": "invoice.paid"})
    page = await response.text()
    assert response.status == 200
    assert all(e in page for e in acme)
    assert not any(e in page for e in globex)
    assert 'name="tenant" value="acme"' in page
    # A tenant nothing carries: nothing, not an error.
    page = await (await ui.get("/ui/events", params={"tenant": "initech"})).text()
    assert "No event matches" in page
    # The event's page says its tenant.
    page = await (await ui.get(f"/ui/events/{acme[0]}")).text()
    assert "Tenant acme" in shown(page)


async def test_bad_tenant_filters_get_the_operations_message(ui: Any, tenants: Any) -> None:
    for path in ("/ui/events", "/ui/dead-letters", "/ui/endpoints", "/ui/dead-letters/confirm"):
        response = await ui.get(
            path, params={"tenant": "ac\x01me", "action": "replay", "scope": "matching"}
        )
        assert response.status == 422, path
        page = shown(await response.text())
        assert "a tenant is 1-255 characters without control characters" in page, path
        assert "Field: tenant" in page, path


async def test_dead_letters_filter_and_bulk_actions_by_tenant(
    ui: Any, tenants: Any, conn: Any, receiver: Receiver, relay: Any
) -> None:
    assert await dead_tenants(conn) == ["acme", "acme", "globex", "globex", "globex"]
    page = await (await ui.get("/ui/dead-letters", params={"tenant": "globex"})).text()
    assert page.count('name="id" value=') == 3
    assert ">globex<" in page
    assert ">acme<" not in page
    # Discard everything matching tenant=acme: the confirmation counts acme's alone...
    confirm = await ui.get(
        "/ui/dead-letters/confirm",
        params={"action": "discard", "scope": "matching", "tenant": "acme"},
    )
    page = await confirm.text()
    assert "Discard 2 dead letters?" in page
    assert '<input type="hidden" name="tenant" value="acme">' in page
    response = await ui.post(
        "/ui/dead-letters/discard",
        data={
            "csrf_token": csrf_for(page, "/ui/dead-letters/discard"),
            "scope": "matching",
            "tenant": "acme",
        },
    )
    assert "Discarded 2 dead letters" in await response.text()
    # ...and discards acme's alone.
    assert await dead_tenants(conn) == ["globex", "globex", "globex"]
    # Replay everything matching tenant=globex, through the operation the API uses.
    receiver.script["/audit"] = []
    page = await (
        await ui.get(
            "/ui/dead-letters/confirm",
            params={"action": "replay", "scope": "matching", "tenant": "globex"},
        )
    ).text()
    assert "Replay 3 dead letters?" in page
    before = len(receiver.on("/audit"))
    async with relay():
        response = await ui.post(
            "/ui/dead-letters/replay",
            data={
                "csrf_token": csrf_for(page, "/ui/dead-letters/replay"),
                "scope": "matching",
                "tenant": "globex",
            },
        )
        assert "Replayed 3 dead letters" in await response.text()
        await receiver.wait_count(before + 3, "/audit")
    assert await dead_tenants(conn) == []
    replayed = {r.webhook_id for r in receiver.on("/audit")[before:]}
    assert replayed == {str(e) for e in tenants["events"]["globex"]}


async def test_send_a_test_event_shows_the_receivers_answer(
    ui: Any, conn: Any, receiver: Receiver, relay: Any
) -> None:
    target = await ops.create_endpoint(
        conn, url=receiver.url("/hook"), event_types=["never.*"], tenant="acme"
    )
    bystander = await ops.create_endpoint(conn, url=receiver.url("/other"), event_types=["*"])
    base = f"/ui/endpoints/{target['id']}"
    page = await (await ui.get(base)).text()
    token = csrf_for(page, f"{base}/test")
    async with relay(retry_schedule="1h"):
        response = await ui.post(
            f"{base}/test", data={"csrf_token": token, "event_type": "invoice.paid"}
        )
        page = await response.text()
        assert response.status == 200, page
        assert "Test event delivered" in shown(page)
        assert "Status 200" in shown(page)
        assert '<pre class="response">ok</pre>' in page
        [request] = receiver.requests
        assert request.path == "/hook"
        assert request.json["type"] == "invoice.paid"
        assert request.webhook_id in page  # the event's id, linked
        assert_verified(request, target["secret"])
        # A receiver that fails: its status and body, as the API returns them.
        receiver.script["/hook"] = [503]
        response = await ui.post(f"{base}/test", data={"csrf_token": token})
        page = shown(await response.text())
        assert "Test event not delivered" in page
        assert "Status 503" in page
        assert "nope" in page
        assert f"of type {ops.TEST_EVENT_TYPE}" in page
    assert not receiver.on("/other")
    assert (await ops.endpoint_stats(conn, bystander["id"]))["attempts"] == 0
    # The endpoint's attempts mark both as tests.
    page = await (await ui.get(base)).text()
    assert page.count('<span class="badge">test</span>') == 2


async def test_a_test_send_without_a_relay_says_so(ui: Any, conn: Any, receiver: Receiver) -> None:
    target = await ops.create_endpoint(conn, url=receiver.url("/t"), event_types=["*"])
    base = f"/ui/endpoints/{target['id']}"
    token = csrf_for(await (await ui.get(base)).text(), f"{base}/test")
    response = await ui.post(f"{base}/test", data={"csrf_token": token, "wait_seconds": "0.3"})
    assert response.status == 200
    page = shown(await response.text())
    assert "no relay picked it up within 0.3s" in page
    assert "Test event queued, no attempt yet" in page
    # A disabled endpoint: no waiting, the page says the event is held.
    await ops.set_endpoint_enabled(conn, target["id"], False)
    response = await ui.post(f"{base}/test", data={"csrf_token": token})
    assert "the endpoint is disabled" in text_of(await response.text())


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"event_type": "bad type"}, "event_type", "'bad type' is not an event type"),
        ({"event_type": HOSTILE}, "event_type", "is not an event type"),
        ({"wait_seconds": "soon"}, "wait_seconds", "'soon' is not a number of seconds"),
        ({"wait_seconds": "١٢"}, "wait_seconds", "is not a number of seconds"),
        ({"wait_seconds": "999"}, "wait_seconds", "wait_seconds must be between 0 and 330"),
    ],
)
async def test_a_bad_test_send_gets_the_message_and_writes_nothing(
    ui: Any, conn: Any, fields: dict[str, str], field: str, message: str
) -> None:
    target = await ops.create_endpoint(conn, url="https://example.com/x", event_types=["*"])
    base = f"/ui/endpoints/{target['id']}"
    token = csrf_for(await (await ui.get(base)).text(), f"{base}/test")
    response = await ui.post(f"{base}/test", data={"csrf_token": token, **fields})
    assert response.status == 422
    assert response.content_type == "text/html"
    page = await response.text()
    assert HOSTILE not in page
    assert message in shown(page)
    assert f"Field: {field}" in shown(page)
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0


async def test_a_test_send_needs_its_csrf_token(ui: Any, conn: Any) -> None:
    target = await ops.create_endpoint(conn, url="https://example.com/x", event_types=["*"])
    base = f"/ui/endpoints/{target['id']}"
    page = await (await ui.get(base)).text()
    for data in ({}, {"csrf_token": csrf_for(page, f"{base}/disable")}):
        response = await ui.post(f"{base}/test", data={**data, "wait_seconds": "0"})
        assert response.status == 403
        assert "CSRF token is missing or wrong" in await response.text()
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0
    # An unknown endpoint, with the right token for its path: a 404 page.
    zero = "00000000-0000-0000-0000-000000000000"
    path = f"/ui/endpoints/{zero}/test"
    response = await ui.post(path, data={"csrf_token": csrf(ui, path)})
    assert response.status == 404
    assert "no endpoint" in await response.text()
