"""Per-tenant ordering keys that cannot collide, tenants refused with control characters at every
door, and the dead letters' tenant (migration 0013). Real Postgres, real HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pgcourier import db, ops
from pgcourier.errors import InvalidInput
from tests.integration.helpers import AUTH
from tests.integration.test_cli import pgcourier

US = chr(31)


async def test_an_untenanted_key_never_shares_order_with_a_tenants_key(
    conn: asyncpg.Connection,
) -> None:
    """Tenant acme's "k" is queued as acme + chr(31) + "k". An event without a tenant whose key
    is that same text must not wait behind acme's (nor acme's behind it) at an endpoint that
    takes both; and two untenanted keys stay apart from each other."""
    await ops.create_endpoint(conn, url="https://r.example/all", event_types=["*"])
    acme = await ops.enqueue(conn, "a.b", {}, ordering_key="k", tenant="acme")
    forged = await ops.enqueue(conn, "a.b", {}, ordering_key=f"acme{US}k")
    plain = await ops.enqueue(conn, "a.b", {}, ordering_key="k")
    claimed = await conn.fetch("SELECT * FROM courier.claim(10, 30, $1, 10, 10)", uuid.uuid4())
    # Every one is the head of its own key: all three leave at once.
    assert sorted(r["event_id"] for r in claimed) == sorted([acme, forged, plain])
    keys = await conn.fetch("SELECT event_id, ordering_key FROM courier.queue")
    by_event = {r["event_id"]: r["ordering_key"] for r in keys}
    assert len(set(by_event.values())) == 3, by_event
    # Keys without a chr(31) are queued as they are (as before 0013).
    assert by_event[plain] == "k"
    assert by_event[acme] == f"acme{US}k"


@pytest.mark.parametrize("tenant", [f"acme{US}x", "acme\x7f", "\x00acme", "a\tb"])
async def test_a_tenant_with_a_control_character_is_refused_at_every_door(
    conn: asyncpg.Connection, api: Any, dsn: str, tenant: str
) -> None:
    """SQL (enqueue and a plain INSERT: SQLSTATE 22023, a courier: message), the operations
    (InvalidInput naming the field), the API (422 naming it), the CLI (one line, exit 1); and
    nothing is written."""
    if "\x00" not in tenant:  # (Postgres text cannot hold NUL at all: the driver refuses it.)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="courier: tenant"):
            await conn.fetchval("SELECT courier.enqueue('a.b', '{}', tenant => $1)", tenant)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="courier: tenant"):
            await conn.execute(
                "INSERT INTO courier.outbox (event_type, payload, tenant) VALUES ('a.b', '{}', $1)",
                tenant,
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO courier.endpoints (url, event_types, secret, tenant)"
                " VALUES ('https://r.example/x', '{*}', 'whsec_' || repeat('A', 32), $1)",
                tenant,
            )
    with pytest.raises(InvalidInput) as refused:
        await ops.enqueue(conn, "a.b", {}, tenant=tenant)
    assert refused.value.field == "tenant"
    for method, path, body in (
        ("post", "/api/v1/events", {"event_type": "a.b", "payload": {}, "tenant": tenant}),
        (
            "post",
            "/api/v1/endpoints",
            {"url": "https://r.example/x", "event_types": ["*"], "tenant": tenant},
        ),
        ("post", "/api/v1/dead-letters/replay", {"tenant": tenant}),
    ):
        response = await getattr(api, method)(path, headers=AUTH, json=body)
        assert response.status == 422, path
        assert (await response.json())["error"]["field"] == "tenant", path
    for path in ("/api/v1/events", "/api/v1/dead-letters", "/api/v1/endpoints"):
        response = await api.get(path, headers=AUTH, params={"tenant": tenant})
        assert response.status == 422, path
        assert (await response.json())["error"]["field"] == "tenant", path
    if "\x00" not in tenant:  # (an argv cannot hold NUL)
        for argv in (
            ("enqueue", "a.b", "{}", "--tenant", tenant),
            ("dlq", "list", "--tenant", tenant),
        ):
            code, _, err = await pgcourier(*argv, dsn=dsn)
            assert code == 1, argv
            assert len(err.strip().splitlines()) == 1, err
            assert "tenant" in err, err
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0
    assert await conn.fetchval("SELECT count(*) FROM courier.endpoints") == 0


async def test_dead_letters_take_their_events_tenant(conn: asyncpg.Connection) -> None:
    """Whatever writes a dead letter, it carries its event's tenant (the trigger of 0013): the
    relay's completion, and a plain INSERT."""
    endpoint = await ops.create_endpoint(conn, url="https://r.example/all", event_types=["*"])
    acme = await ops.enqueue(conn, "a.b", {}, tenant="acme")
    none = await ops.enqueue(conn, "a.b", {})
    relay = uuid.uuid4()
    leased = await conn.fetch("SELECT * FROM courier.claim(10, 30, $1, 10, 10)", relay)
    assert len(leased) == 2
    ids = [r["id"] for r in leased]
    now = datetime.now(UTC)
    await conn.fetch(
        db.QUERIES["complete_deliveries"],
        ids,
        ["dead"] * 2,
        [None] * 2,
        [500] * 2,
        ["HTTP 500"] * 2,
        [now] * 2,
        relay,
        [r["event_id"] for r in leased],
        [r["endpoint_id"] for r in leased],
        [1] * 2,
        [12.5] * 2,
        [""] * 2,
        ["HTTP 500"] * 2,
    )
    rows = await conn.fetch("SELECT event_id, tenant FROM courier.dead_letters")
    assert {r["event_id"]: r["tenant"] for r in rows} == {acme: "acme", none: None}
    page = await ops.list_dead(conn, ops.DeadFilter(tenant="acme"))
    assert [d["event_id"] for d in page["data"]] == [str(acme)]
    assert page["data"][0]["url"] == endpoint["url"]


async def test_0013_backfills_the_dead_letters_tenant(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters written before 0013 get their event's tenant from the migration, across
    several of its id ranges; the tenant's listing, count and bulk replay then find them."""
    conn = await asyncpg.connect(empty_dsn)
    try:
        with monkeypatch.context() as before:
            before.setattr(db, "MIGRATIONS", db.MIGRATIONS[:12])
            before.setattr(db, "LATEST_VERSION", 12)
            await db.migrate(conn)
        endpoint = await conn.fetchval(
            "INSERT INTO courier.endpoints (url, event_types, secret)"
            " VALUES ('https://r.example/a', '{*}', 'whsec_' || repeat('A', 32)) RETURNING id"
        )
        # 25,000 dead letters over three of the backfill's ranges; every fifth event is acme's,
        # every fifth other one has no tenant.
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload, tenant, fanned_out_at)"
            " SELECT 'a.b', '{}', CASE WHEN g % 5 = 0 THEN 'acme' WHEN g % 5 = 1 THEN NULL"
            " ELSE 'big' END, now() FROM generate_series(1, 25000) AS g"
        )
        await conn.execute(
            "INSERT INTO courier.dead_letters (event_id, endpoint_id) SELECT id, $1"
            " FROM courier.outbox",
            endpoint,
        )
        assert await db.migrate(conn) == [m.version for m in db.MIGRATIONS[12:]]
        wrong = await conn.fetchval(
            "SELECT count(*) FROM courier.dead_letters AS d JOIN courier.outbox AS o"
            " ON o.id = d.event_id WHERE d.tenant IS DISTINCT FROM o.tenant"
        )
        assert wrong == 0
        where = ops.DeadFilter(tenant="acme")
        assert await ops.console.count_dead(conn, where) == 5000
        page = await ops.list_dead(conn, where, limit=1000)
        assert len(page["data"]) == 1000
        assert {d["tenant"] for d in page["data"]} == {"acme"}
        replayed = await ops.replay_dead(conn, None, where)
        assert len(replayed) == 5000
        assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 5000
    finally:
        await conn.close()


async def test_one_discard_for_the_api_the_cli_and_the_console(conn: asyncpg.Connection) -> None:
    """ops.discard_many (the console's bulk discard) is the API's discard_dead statement in
    batches: a filter's dead letters (here a tenant's) move to the history as discarded, each
    once, and discarding again finds nothing."""
    endpoint = await ops.create_endpoint(conn, url="https://r.example/all", event_types=["*"])
    events = [await ops.enqueue(conn, "a.b", {}, tenant=t) for t in ("acme",) * 5 + (None,)]
    dead = [
        await conn.fetchval(
            "INSERT INTO courier.dead_letters (event_id, endpoint_id) VALUES ($1, $2) RETURNING id",
            event,
            uuid.UUID(endpoint["id"]),
        )
        for event in events
    ]
    where = ops.DeadFilter(tenant="acme")
    assert await ops.discard_many(conn, None, where, batch_size=2) == sorted(dead[:5])
    assert await ops.discard_many(conn, None, where, batch_size=2) == []
    assert await ops.discard_many(conn, [dead[0], dead[5]]) == [dead[5]]
    statuses = await conn.fetch(
        "SELECT status, count(*) FROM courier.delivery_history GROUP BY status"
    )
    assert [tuple(r) for r in statuses] == [("discarded", 6)]
