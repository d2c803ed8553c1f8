"""Tenants and direct targeting (issue 13, parts 1 and 2): who receives what, keys per tenant,
refusals that write nothing, filters and per-tenant stats. Real Postgres, real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from yarl import URL

from pgcourier import db, ops
from pgcourier.errors import InvalidInput
from tests.integration.helpers import AUTH, Receiver, assert_verified, wait_until
from tests.integration.test_cli import pgcourier


async def _endpoint(
    conn: asyncpg.Connection, receiver: Receiver, path: str, tenant: str | None, events: list[str]
) -> dict[str, Any]:
    return await ops.create_endpoint(
        conn, url=receiver.url(path), event_types=events, tenant=tenant
    )


async def test_routing_matrix_over_real_http(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, api: Any, dsn: str
) -> None:
    """Tenant / no tenant x endpoint tenant / none x targeted: each event reaches exactly the
    endpoints the rules name, with the webhook body and headers of any other event."""
    acme = await _endpoint(conn, receiver, "/acme", "acme", ["*"])
    globex = await _endpoint(conn, receiver, "/globex", "globex", ["*"])
    internal = await _endpoint(conn, receiver, "/internal", None, ["*"])
    # Matches nothing by its patterns: only targeted events reach it.
    acme_other = await _endpoint(conn, receiver, "/acme-other", "acme", ["never.*"])
    plain = await _endpoint(conn, receiver, "/plain", None, ["never.*"])

    async def send(name: str, **kwargs: Any) -> str:
        return str(await ops.enqueue(conn, "invoice.paid", {"name": name}, **kwargs))

    expected = {
        await send("no tenant"): {"/internal"},
        await send("acme", tenant="acme"): {"/acme", "/internal"},
        await send("globex", tenant="globex"): {"/globex", "/internal"},
        await send("unknown tenant", tenant="initech"): {"/internal"},
        await send("acme targeted", tenant="acme", endpoint_id=acme_other["id"]): {"/acme-other"},
        await send("targeted, tenant taken", endpoint_id=acme_other["id"]): {"/acme-other"},
        await send("acme to untenanted", tenant="acme", endpoint_id=plain["id"]): {"/plain"},
        await send("untenanted targeted", endpoint_id=plain["id"]): {"/plain"},
        await send("acme at internal", tenant="acme", endpoint_id=internal["id"]): {"/internal"},
    }
    # The API and the CLI target the same way.
    response = await api.post(
        "/api/v1/events",
        headers=AUTH,
        json={"event_type": "x.y", "payload": {}, "tenant": "globex", "endpoint_id": globex["id"]},
    )
    assert response.status == 201
    expected[(await response.json())["id"]] = {"/globex"}
    code, out, err = await pgcourier(
        "enqueue", "x.y", "{}", "--endpoint", acme["id"], "--tenant", "acme", dsn=dsn
    )
    assert code == 0, err
    expected[json.loads(out)["id"]] = {"/acme"}

    total = sum(len(paths) for paths in expected.values())
    async with relay():
        await receiver.wait_count(total, timeout=20)
        await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM courier.queue"))
    got: dict[str, set[str]] = {}
    for request in receiver.requests:
        got.setdefault(request.webhook_id, set()).add(request.path)
    assert got == expected
    assert len(receiver.requests) == total  # each once
    secrets = {"/acme": acme, "/globex": globex, "/internal": internal}
    for request in receiver.requests:
        # Unchanged body and headers: no tenant anywhere in what a receiver sees.
        assert set(request.json) == {"id", "type", "timestamp", "data"}
        assert not [h for h in request.headers if "tenant" in h.lower()]
        if request.path in secrets:
            assert_verified(request, secrets[request.path]["secret"])
    # A targeted event without a tenant took its endpoint's.
    tenants = dict(await conn.fetch("SELECT payload->>'name', tenant FROM courier.outbox"))
    assert tenants["targeted, tenant taken"] == "acme"
    assert tenants["untenanted targeted"] is None
    assert tenants["acme at internal"] == "acme"

    # Per-tenant stats: acme's endpoints (acme, acme-other) took 4 attempts, all delivered;
    # acme's events are the six carrying its name (given or taken).
    stats = await (await api.get("/api/v1/tenants/acme/stats?window=1h", headers=AUTH)).json()
    assert {k: stats[k] for k in ("endpoints", "events", "attempts", "delivered")} == {
        "endpoints": 2,
        "events": 6,
        "attempts": 4,
        "delivered": 4,
    }
    assert stats["success_rate"] == 1.0
    assert stats["pending"] == stats["dead"] == 0
    assert stats["latency_p50_ms"] is not None
    code, out, err = await pgcourier("tenant", "stats", "globex", "--window", "24h", dsn=dsn)
    assert code == 0, err
    assert json.loads(out)["attempts"] == 2
    nobody = await (await api.get("/api/v1/tenants/no%20one/stats", headers=AUTH)).json()
    assert nobody["tenant"] == "no one"
    assert nobody["attempts"] == nobody["endpoints"] == nobody["events"] == 0
    # Any printable name can be asked for, percent-encoded ("/" included).
    slashed = await api.get(URL("/api/v1/tenants/a%2Fb%3F/stats", encoded=True), headers=AUTH)
    assert (await slashed.json())["tenant"] == "a/b?"


async def test_idempotency_keys_are_per_tenant(conn: asyncpg.Connection) -> None:
    endpoint = await ops.create_endpoint(
        conn, url="https://r.example/a", event_types=["*"], tenant="acme"
    )
    first = {
        t: await ops.enqueue(conn, "a.b", {}, idempotency_key="k", tenant=t)
        for t in (None, "acme", "globex")
    }
    assert len(set(first.values())) == 3
    for t, event_id in first.items():
        assert await ops.enqueue(conn, "a.b", {"n": 2}, idempotency_key="k", tenant=t) == event_id
    # Named arguments, as producers write them in SQL.
    again = await conn.fetchval(
        "SELECT courier.enqueue('a.b', '{}', idempotency_key => 'k', tenant => 'globex')"
    )
    assert again == first["globex"]
    # A targeted event without a tenant is its endpoint's tenant's, key included.
    targeted = await ops.enqueue(conn, "a.b", {}, idempotency_key="k", endpoint_id=endpoint["id"])
    assert targeted == first["acme"]
    # A plain INSERT is held to the same index.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload, idempotency_key, tenant)"
            " VALUES ('a.b', '{}', 'k', 'acme')"
        )
    await conn.execute(
        "INSERT INTO courier.outbox (event_type, payload, idempotency_key, tenant)"
        " VALUES ('a.b', '{}', 'k', 'initech')"
    )
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 4


async def test_ordering_keys_are_per_tenant(conn: asyncpg.Connection) -> None:
    """At an endpoint that takes every tenant's events, acme's "k" waits only for acme's "k":
    globex's "k" goes beside it."""
    shared = await ops.create_endpoint(conn, url="https://r.example/all", event_types=["*"])
    ids = [
        await ops.enqueue(conn, "a.b", {"n": n}, ordering_key="k", tenant=t)
        for n, t in enumerate(("acme", "acme", "globex", None, None))
    ]
    relay_id = uuid.uuid4()
    claimed = await conn.fetch("SELECT * FROM courier.claim(10, 30, $1, 10, 10)", relay_id)
    # The head of each (tenant, key): acme's first, globex's, the untenanted first.
    assert sorted(r["event_id"] for r in claimed) == sorted([ids[0], ids[2], ids[3]])
    assert {r["endpoint_id"] for r in claimed} == {uuid.UUID(shared["id"])}
    # Finish acme's head: its follower is next, the others' followers still wait.
    await conn.execute(
        "DELETE FROM courier.queue WHERE event_id = ANY($1::uuid[])", [ids[0], ids[2]]
    )
    await conn.execute("UPDATE courier.queue SET due_at = now(), lease_token = NULL")
    again = await conn.fetch("SELECT * FROM courier.claim(10, 30, $1, 10, 10)", relay_id)
    assert sorted(r["event_id"] for r in again) == sorted([ids[1], ids[3]])


async def _outbox_count(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM courier.outbox")
    return count


async def test_targeting_refusals_write_nothing(
    conn: asyncpg.Connection, api: Any, dsn: str
) -> None:
    acme = await ops.create_endpoint(
        conn, url="https://r.example/a", event_types=["*"], tenant="acme"
    )
    gone = await ops.create_endpoint(conn, url="https://r.example/g", event_types=["*"])
    await ops.delete_endpoint(conn, gone["id"])
    unknown = str(uuid.uuid4())
    cases = [
        ({"endpoint_id": unknown}, "endpoint_id", "not an endpoint"),
        ({"endpoint_id": gone["id"]}, "endpoint_id", "not an endpoint"),
        ({"endpoint_id": acme["id"], "tenant": "globex"}, "tenant", "does not belong to tenant"),
        ({"tenant": "bad\ntenant"}, "tenant", "control characters"),
    ]
    for kwargs, field, message in cases:
        with pytest.raises(InvalidInput, match=message) as refused:
            await ops.enqueue(conn, "a.b", {}, idempotency_key="k", **kwargs)
        assert refused.value.field == field
        # SQL: SQLSTATE 22023 with a courier: message, whoever writes (enqueue or INSERT).
        with pytest.raises(asyncpg.InvalidParameterValueError, match=f"courier: .*{message}"):
            await conn.fetchval(
                "SELECT courier.enqueue('a.b', '{}', tenant => $1, endpoint_id => $2::uuid)",
                kwargs.get("tenant"),
                kwargs.get("endpoint_id"),
            )
        with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
            await conn.execute(
                "INSERT INTO courier.outbox (event_type, payload, tenant, endpoint_id)"
                " VALUES ('a.b', '{}', $1, $2::uuid)",
                kwargs.get("tenant"),
                kwargs.get("endpoint_id"),
            )
        response = await api.post(
            "/api/v1/events", headers=AUTH, json={"event_type": "a.b", "payload": {}, **kwargs}
        )
        assert response.status == 422
        assert (await response.json())["error"]["field"] in (field, "tenant")
    code, _, err = await pgcourier("enqueue", "a.b", "{}", "--endpoint", unknown, dsn=dsn)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "not an endpoint" in err
    assert await _outbox_count(conn) == 0


async def test_endpoint_tenant_and_list_filters(
    conn: asyncpg.Connection, api: Any, dsn: str
) -> None:
    response = await api.post(
        "/api/v1/endpoints",
        headers=AUTH,
        json={"url": "https://r.example/a", "event_types": ["*"], "tenant": "acme"},
    )
    assert response.status == 201
    acme = await response.json()
    assert acme["tenant"] == "acme"
    code, out, err = await pgcourier(
        "endpoint", "add", "--url", "https://r.example/g", "--event", "*", "--tenant", "globex",
        dsn=dsn,
    )  # fmt: skip
    assert code == 0, err
    globex = json.loads(out)
    await ops.create_endpoint(conn, url="https://r.example/n", event_types=["*"])

    listed = await (await api.get("/api/v1/endpoints?tenant=acme", headers=AUTH)).json()
    assert [e["id"] for e in listed["data"]] == [acme["id"]]
    code, out, _ = await pgcourier("endpoint", "list", "--tenant", "globex", dsn=dsn)
    assert [e["id"] for e in json.loads(out)] == [globex["id"]]
    shown = await (await api.get(f"/api/v1/endpoints/{globex['id']}", headers=AUTH)).json()
    assert shown["tenant"] == "globex"

    # Update: move it, then take its tenant away (null / --tenant '').
    response = await api.patch(
        f"/api/v1/endpoints/{globex['id']}", headers=AUTH, json={"tenant": "initech"}
    )
    assert (await response.json())["tenant"] == "initech"
    code, out, err = await pgcourier("endpoint", "update", globex["id"], "--tenant", "", dsn=dsn)
    assert code == 0, err
    assert json.loads(out)["tenant"] is None
    response = await api.patch(f"/api/v1/endpoints/{acme['id']}", headers=AUTH, json={"tenant": ""})
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "tenant"

    # Events by tenant: API and CLI.
    for t in ("acme", "acme", "globex", None):
        await ops.enqueue(conn, "a.b", {}, tenant=t)
    page = await (await api.get("/api/v1/events?tenant=acme&limit=1", headers=AUTH)).json()
    assert [e["tenant"] for e in page["data"]] == ["acme"]
    rest = await (
        await api.get(f"/api/v1/events?tenant=acme&cursor={page['next_cursor']}", headers=AUTH)
    ).json()
    assert [e["tenant"] for e in rest["data"]] == ["acme"]
    assert rest["next_cursor"] is None
    code, out, _ = await pgcourier("events", "list", "--tenant", "globex", dsn=dsn)
    assert [e["tenant"] for e in json.loads(out)["data"]] == ["globex"]


async def test_dead_letters_by_tenant_list_and_replay(
    conn: asyncpg.Connection, api: Any, dsn: str
) -> None:
    endpoint = await ops.create_endpoint(conn, url="https://r.example/all", event_types=["*"])
    events = {t: await ops.enqueue(conn, "a.b", {}, tenant=t) for t in ("acme", "globex", None)}
    # Dead as the relay leaves them (the relay's path to them is tested elsewhere).
    dead = {
        t: await conn.fetchval(
            "INSERT INTO courier.dead_letters (event_id, endpoint_id, attempts)"
            " VALUES ($1, $2, 3) RETURNING id",
            event_id,
            uuid.UUID(endpoint["id"]),
        )
        for t, event_id in events.items()
    }
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    listed = await (await api.get("/api/v1/dead-letters?tenant=acme", headers=AUTH)).json()
    assert [(d["id"], d["tenant"]) for d in listed["data"]] == [(dead["acme"], "acme")]
    _, out, _ = await pgcourier("dlq", "list", "--tenant", "globex", dsn=dsn)
    assert [d["id"] for d in json.loads(out)["data"]] == [dead["globex"]]
    response = await api.post("/api/v1/dead-letters/replay", headers=AUTH, json={"tenant": "acme"})
    assert await response.json() == {"replayed": [dead["acme"]], "count": 1}
    _, out, _ = await pgcourier("dlq", "replay", "--all", "--tenant", "globex", dsn=dsn)
    assert json.loads(out) == {"replayed": [dead["globex"]], "count": 1}
    left = [r["id"] for r in await conn.fetch("SELECT id FROM courier.dead_letters")]
    assert left == [dead[None]]


async def test_0007_upgrades_a_database_with_events_and_a_producer(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at 0006 with events, a queued keyed delivery and the README's producer role of
    that time: after 0007 the old events are tenant-less, their keys still hold in the tenant-less
    namespace, the queued delivery is sent in order, and the producer keeps its rights."""
    role = f"producer_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(empty_dsn)
    try:
        with monkeypatch.context() as before:
            before.setattr(db, "MIGRATIONS", db.MIGRATIONS[:6])
            before.setattr(db, "LATEST_VERSION", 6)
            assert await db.migrate(conn) == [1, 2, 3, 4, 5, 6]
        await conn.execute(
            f"CREATE ROLE {role} NOLOGIN;"
            f"GRANT USAGE ON SCHEMA courier TO {role};"
            f"GRANT EXECUTE ON FUNCTION courier.enqueue(text, jsonb, text, text) TO {role};"
            f"GRANT INSERT (event_type, payload, ordering_key, idempotency_key)"
            f" ON courier.outbox TO {role};"
        )
        endpoint_id = await conn.fetchval(
            "INSERT INTO courier.endpoints (url, event_types, secret)"
            " VALUES ('https://r.example/a', '{*}', 'whsec_' || repeat('A', 32)) RETURNING id"
        )
        old = await conn.fetchval("SELECT courier.enqueue('a.b', '{}', 'key-1', 'idem-1')")
        await conn.fetchval("SELECT * FROM courier.claim(0, 30, gen_random_uuid(), 10)")
        queued = await conn.fetchval("SELECT ordering_key FROM courier.queue")
        assert queued == "key-1"

        assert await db.migrate(conn) == [m.version for m in db.MIGRATIONS[6:]]
        assert await conn.fetchval("SELECT tenant FROM courier.outbox WHERE id = $1", old) is None
        assert await ops.enqueue(conn, "a.b", {}, idempotency_key="idem-1") == old
        assert await ops.enqueue(conn, "a.b", {}, idempotency_key="idem-1", tenant="t") != old
        # The old row's key and a new untenanted event of the same key stay in one order.
        follower = await ops.enqueue(conn, "a.b", {}, ordering_key="key-1")
        await conn.fetchval("SELECT count(*) FROM courier.claim(0, 30, gen_random_uuid(), 10, 10)")
        keys = await conn.fetch(
            "SELECT event_id, ordering_key FROM courier.queue"
            " WHERE ordering_key IS NOT NULL ORDER BY id"
        )
        assert [(r["event_id"], r["ordering_key"]) for r in keys] == [
            (old, "key-1"),
            (follower, "key-1"),
        ]
        assert await conn.fetchval("SELECT tenant FROM courier.endpoints") is None

        await conn.execute(f"SET ROLE {role}")
        targeted = await conn.fetchval(
            "SELECT courier.enqueue('a.b', '{}', tenant => 'acme', endpoint_id => $1)",
            endpoint_id,
        )
        assert targeted is not None
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload, tenant) VALUES ('a.b', '{}', 'acme')"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # only pgcourier marks tests
            await conn.execute(
                "INSERT INTO courier.outbox (event_type, payload, test) VALUES ('a.b', '{}', true)"
            )
        await conn.execute("RESET ROLE")
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_readme_sql_runs_as_written(conn: asyncpg.Connection) -> None:
    """The producer examples of "Sending to your customers", run as operators read them."""
    found = re.search(r"<!-- tenants-sql -->\s*```sql\n(.*?)```", README.read_text(), re.S)
    assert found, "README.md lost its tenants-sql snippet"
    target = "5f0c8a2e-4d1b-4c1e-9a57-3b0d6f2e8c41"  # the id the README uses
    await conn.execute(
        "INSERT INTO courier.endpoints (id, url, event_types, secret, tenant)"
        " VALUES ($1, 'https://acme.example/hooks', '{invoice.*}', 'whsec_' || repeat('A', 32),"
        " 'acme')",
        uuid.UUID(target),
    )
    await conn.execute(found.group(1))
    rows = await conn.fetch(
        "SELECT payload->>'invoice_id' AS invoice, tenant, endpoint_id::text AS target"
        " FROM courier.outbox ORDER BY seq"
    )
    assert [tuple(r) for r in rows] == [
        ("7", "acme", None),
        ("9", "globex", None),
        ("8", "acme", None),
        ("7", "acme", target),
    ]


async def test_an_endpoint_moved_to_another_tenant_never_sends_the_old_tenants_events(
    conn: asyncpg.Connection, receiver: Receiver, relay: Any, api: Any
) -> None:
    endpoint = await ops.create_endpoint(
        conn, url=receiver.url("/moved"), event_types=["*"], tenant="acme", enabled=False
    )
    for i in range(3):
        await ops.enqueue(conn, "a.b", {"i": i}, tenant="acme")
    # Fanned out and held while the endpoint is disabled; then one of them dead.
    await conn.fetch("SELECT * FROM courier.claim(0, 30, gen_random_uuid(), 10, 10)")
    assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 3
    response = await api.patch(
        f"/api/v1/endpoints/{endpoint['id']}",
        headers=AUTH,
        json={"tenant": "globex", "enabled": True},
    )
    assert response.status == 200, await response.text()
    assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 0
    reasons = await conn.fetch(
        "SELECT status, last_error FROM courier.delivery_history WHERE endpoint_id = $1",
        endpoint["id"],
    )
    assert [(r["status"], r["last_error"]) for r in reasons] == [
        ("discarded", "discarded: the endpoint moved to another tenant")
    ] * 3
    await ops.enqueue(conn, "a.b", {"for": "globex"}, tenant="globex")
    async with relay():
        await receiver.wait_count(1, "/moved")
        await asyncio.sleep(0.3)
    assert [r.json["data"] for r in receiver.on("/moved")] == [{"for": "globex"}]
