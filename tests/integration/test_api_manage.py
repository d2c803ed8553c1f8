"""/api/v1 endpoint management and dead letters: update, delete, rotate, stats, recover, filters.

Each test drives the real app over real Postgres, and real deliveries where the relay matters.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.signing import WebhookVerificationError, verify
from tests.integration.attempts import all_attempts
from tests.integration.helpers import AUTH, Receiver, add_endpoint, statuses, wait_until


async def _json(response: Any, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _make_dead(conn: asyncpg.Connection, endpoint_id: str, n: int, when: str) -> list[int]:
    """n events with a dead delivery at ``endpoint_id``, dead at ``when`` (SQL expression)."""
    ids = []
    for i in range(n):
        event_id = await ops.enqueue(conn, f"kind.{i % 2}", {"i": i})
        ids.append(
            await conn.fetchval(
                "INSERT INTO courier.dead_letters"
                " (event_id, endpoint_id, attempts, dead_at, last_error)"
                f" VALUES ($1, $2, 3, {when}, 'HTTP 500') RETURNING id",
                event_id,
                endpoint_id,
            )
        )
    # These events were fanned out by hand: keep a relay (if any) from fanning them out again.
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    return ids


async def test_patch_changes_only_the_fields_given(api: Any) -> None:
    created = await _json(
        await api.post(
            "/api/v1/endpoints",
            headers=AUTH,
            json={"url": "https://a.example/h", "event_types": ["a.*"], "description": "one"},
        ),
        201,
    )
    path = f"/api/v1/endpoints/{created['id']}"
    updated = await _json(
        await api.patch(
            path,
            headers=AUTH,
            json={
                "url": "https://b.example/h",
                "timeout_seconds": 7,
                "headers": {"X-Team": "core"},
            },
        )
    )
    assert updated["url"] == "https://b.example/h"
    assert updated["description"] == "one"
    assert updated["event_types"] == ["a.*"]
    assert updated["timeout_seconds"] == 7
    assert updated["headers"] == {"X-Team": "core"}
    # null resets the timeout to the relay's default; other fields cannot be null
    cleared = await _json(await api.patch(path, headers=AUTH, json={"timeout_seconds": None}))
    assert cleared["timeout_seconds"] is None
    error = (await _json(await api.patch(path, headers=AUTH, json={"url": None}), 422))["error"]
    assert error["field"] == "url"
    error = (await _json(await api.patch(path, headers=AUTH, json={}), 400))["error"]
    assert error["field"] == "body"
    disabled = await _json(await api.patch(path, headers=AUTH, json={"enabled": False}))
    assert disabled["disabled_reason"] == "disabled by an operator"
    enabled = await _json(await api.patch(path, headers=AUTH, json={"enabled": True}))
    assert enabled["disabled_reason"] is None
    assert (await _json(await api.get(path, headers=AUTH)))["url"] == "https://b.example/h"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"headers": {"webhook-signature": "forged"}}, "headers"),
        ({"headers": {"Content-Type": "text/plain"}}, "headers"),
        ({"headers": {"bad name": "x"}}, "headers.bad name"),
        ({"headers": {"X-A": "line\r\nInjected: 1"}}, "headers.X-A"),
        ({"headers": {"X-A": 5}}, "headers.X-A"),
        ({"timeout_seconds": 0.5}, "timeout_seconds"),
        ({"timeout_seconds": "5"}, "timeout_seconds"),
        ({"enabled": "yes"}, "enabled"),
        ({"event_types": []}, "event_types"),
        ({"url": "ftp://x"}, "url"),
        ({"secret": "nope"}, "body"),  # not updatable: rotate-secret does that
    ],
)
async def test_bad_updates_name_the_field_and_change_nothing(
    api: Any, conn: asyncpg.Connection, body: Any, field: Any
) -> None:
    endpoint = await add_endpoint(conn, "https://a.example/h")
    before = await conn.fetchrow("SELECT * FROM courier.endpoints")
    response = await api.patch(f"/api/v1/endpoints/{endpoint['id']}", headers=AUTH, json=body)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"] == field or (field == "body" and error["field"] == "secret")
    assert await conn.fetchrow("SELECT * FROM courier.endpoints") == before


async def test_the_database_refuses_bad_headers_from_any_writer(conn: asyncpg.Connection) -> None:
    endpoint = await add_endpoint(conn, "https://a.example/h")
    for headers in ('{"Webhook-Id": "x"}', '{"X-A": "a\\nb"}', '{"X-A": 1}', "[]"):
        with pytest.raises(asyncpg.CheckViolationError, match="endpoint_headers_valid"):
            await conn.execute(
                "UPDATE courier.endpoints SET headers = $1::jsonb WHERE id = $2",
                headers,
                endpoint["id"],
            )


async def test_delete_discards_open_deliveries_and_hides_the_endpoint(
    api: Any, conn: asyncpg.Connection
) -> None:
    gone = await add_endpoint(conn, "https://gone.example/h")
    kept = await add_endpoint(conn, "https://kept.example/h")
    await _make_dead(conn, gone["id"], 2, "now()")
    await _make_dead(conn, kept["id"], 1, "now()")
    result = await _json(await api.delete(f"/api/v1/endpoints/{gone['id']}", headers=AUTH))
    assert result == {"deleted": gone["id"], "discarded": 2}
    assert (await api.get(f"/api/v1/endpoints/{gone['id']}", headers=AUTH)).status == 404
    assert (await api.delete(f"/api/v1/endpoints/{gone['id']}", headers=AUTH)).status == 404
    listed = (await _json(await api.get("/api/v1/endpoints", headers=AUTH)))["data"]
    assert [e["id"] for e in listed] == [kept["id"]]
    assert await statuses(conn) == {"discarded": 2, "dead": 1}
    # Its secret is forgotten: the row no longer holds the one the receiver knew.
    assert await conn.fetchval(
        "SELECT secret <> $2 FROM courier.endpoints WHERE id = $1", gone["id"], gone["secret"]
    )
    # Replaying everything now only touches the live endpoint's dead letter.
    replayed = await _json(await api.post("/api/v1/dead-letters/replay", headers=AUTH, json={}))
    assert replayed["count"] == 1


async def test_sweep_discards_what_a_racing_fan_out_created(
    conn: asyncpg.Connection, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, "https://gone.example/h")
    await ops.delete_endpoint(conn, endpoint["id"])
    # As if a fan-out whose snapshot still saw the endpoint committed just after the delete:
    event_id = await ops.enqueue(conn, "a.b", {})
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    await conn.execute(
        "INSERT INTO courier.queue (event_id, endpoint_id) VALUES ($1, $2)",
        event_id,
        endpoint["id"],
    )
    async with relay(lease=3.0, delivery_timeout=1.0):  # housekeeping runs every lease / 3
        await wait_until(lambda: _status_is(conn, "discarded"), timeout=10)


async def _status_is(conn: asyncpg.Connection, status: str) -> bool:
    return bool(await statuses(conn) == {status: 1})


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    api: Any, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    old = endpoint["secret"]
    rotated = await _json(
        await api.post(f"/api/v1/endpoints/{endpoint['id']}/rotate-secret", headers=AUTH)
    )
    new = rotated["secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert rotated["previous_secret_expires_at"] is not None
    shown = await _json(await api.get(f"/api/v1/endpoints/{endpoint['id']}", headers=AUTH))
    assert not {"secret", "previous_secret"} & set(shown)
    async with relay():
        await ops.enqueue(conn, "a.b", {"n": 1})
        await receiver.wait_count(1)
        # A receiver still holding the old secret and one already holding the new both verify.
        [request] = receiver.requests
        verify("standard", request.headers, request.body, old)
        verify("standard", request.headers, request.body, new)
        assert len(request.headers["webhook-signature"].split()) == 2
        # Rotating again with no grace period: only the newest secret signs.
        newest = await _json(
            await api.post(
                f"/api/v1/endpoints/{endpoint['id']}/rotate-secret",
                headers=AUTH,
                json={"grace_period_seconds": 0},
            )
        )
        assert newest["previous_secret_expires_at"] is None
        await ops.enqueue(conn, "a.b", {"n": 2})
        await receiver.wait_count(2)
    second = receiver.requests[1]
    verify("standard", second.headers, second.body, newest["secret"])
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            verify("standard", second.headers, second.body, stale)


async def test_rotate_secret_refuses_bad_input(api: Any, conn: asyncpg.Connection) -> None:
    endpoint = await add_endpoint(conn, "https://a.example/h")
    path = f"/api/v1/endpoints/{endpoint['id']}/rotate-secret"
    for body, field in (
        ({"grace_period_seconds": -1}, "grace_period_seconds"),
        ({"grace_period_seconds": 10**9}, "grace_period_seconds"),
        ({"secret": "whsec_short"}, "secret"),
    ):
        response = await api.post(path, headers=AUTH, json=body)
        assert response.status == 422
        assert (await response.json())["error"]["field"] == field
    assert await conn.fetchval("SELECT previous_secret IS NULL FROM courier.endpoints")


async def test_custom_headers_and_per_endpoint_timeout_are_used(
    api: Any, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    await _json(
        await api.post(
            "/api/v1/endpoints",
            headers=AUTH,
            json={
                "url": receiver.url("/slow"),
                "event_types": ["*"],
                "timeout_seconds": 1,
                "headers": {"X-Tenant": "acme"},
            },
        ),
        201,
    )
    receiver.delay["/slow"] = 1.6  # under the relay's 2 s default, over the endpoint's 1 s
    event_id = str(await ops.enqueue(conn, "a.b", {}))
    async with relay(retry_schedule="1h"):
        await receiver.wait_count(1)
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = 1 FROM courier.attempts"), timeout=5
        )
    [request] = receiver.requests
    assert request.headers["X-Tenant"] == "acme"
    [attempt] = await all_attempts(conn, event_id)
    assert attempt["error"] == "timeout after 1s"


async def test_stats_after_real_deliveries(
    api: Any, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [500, 500]
    async with relay(retry_schedule="50ms"):
        for i in range(4):
            await ops.enqueue(conn, "a.b", {"i": i})
        await wait_until(lambda: _settled(conn, 4))
    stats = await _json(
        await api.get(f"/api/v1/endpoints/{endpoint['id']}/stats?window=1h", headers=AUTH)
    )
    assert stats["window_seconds"] == 3600
    assert stats["attempts"] == 6  # 4 deliveries, 2 of them retried once
    assert stats["delivered"] == 4
    assert stats["success_rate"] == pytest.approx(4 / 6)
    assert 0 < stats["latency_p50_ms"] <= stats["latency_p99_ms"]
    assert (stats["pending"], stats["dead"]) == (0, 0)
    assert stats["last_failure"]["status_code"] == 500
    for query, field in (("window=soon", "window"), ("window=0", "window")):
        path = f"/api/v1/endpoints/{endpoint['id']}/stats?{query}"
        assert (await _json(await api.get(path, headers=AUTH), 422))["error"]["field"] == field


async def _settled(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await statuses(conn) == {"delivered": n})


async def test_recover_requeues_failures_since_a_time(api: Any, conn: asyncpg.Connection) -> None:
    endpoint = await add_endpoint(conn, "https://a.example/h")
    other = await add_endpoint(conn, "https://b.example/h")
    old = await _make_dead(conn, endpoint["id"], 1, "now() - interval '2 days'")
    recent = await _make_dead(conn, endpoint["id"], 2, "now() - interval '1 hour'")
    await _make_dead(conn, other["id"], 1, "now() - interval '1 hour'")
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    path = f"/api/v1/endpoints/{endpoint['id']}/recover"
    result = await _json(await api.post(path, headers=AUTH, json={"since": since}))
    assert sorted(result["recovered"]) == sorted(recent)
    rows = await conn.fetch("SELECT id, status, schedule_base FROM courier.deliveries ORDER BY id")
    by_id = {r["id"]: r for r in rows}
    assert by_id[old[0]]["status"] == "dead"
    assert [(by_id[i]["status"], by_id[i]["schedule_base"]) for i in recent] == [("pending", 3)] * 2
    again = await _json(await api.post(path, headers=AUTH, json={"since": since}))
    assert again["count"] == 0
    for body, field in (({}, "since"), ({"since": "2026-01-01T00:00:00"}, "since")):
        assert (await _json(await api.post(path, headers=AUTH, json=body), 422))["error"][
            "field"
        ] == field


async def test_dead_letter_filters_cursor_detail_and_discard(
    api: Any, conn: asyncpg.Connection
) -> None:
    a = await add_endpoint(conn, "https://a.example/h")
    b = await add_endpoint(conn, "https://b.example/h")
    a_ids = await _make_dead(conn, a["id"], 5, "clock_timestamp()")
    b_ids = await _make_dead(conn, b["id"], 2, "clock_timestamp()")
    seen, cursor = [], None
    while True:
        query = f"/api/v1/dead-letters?limit=2&endpoint_id={a['id']}"
        page = await _json(
            await api.get(query + (f"&cursor={cursor}" if cursor else ""), headers=AUTH)
        )
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(a_ids))  # newest first, each once
    typed = await _json(await api.get("/api/v1/dead-letters?event_type=kind.1", headers=AUTH))
    assert {d["id"] for d in typed["data"]} == {a_ids[1], a_ids[3], b_ids[1]}
    detail = await _json(await api.get(f"/api/v1/dead-letters/{b_ids[0]}", headers=AUTH))
    assert (detail["payload"], detail["endpoint_id"]) == ({"i": 0}, b["id"])
    assert await _json(await api.delete(f"/api/v1/dead-letters/{b_ids[0]}", headers=AUTH)) == {
        "discarded": b_ids[0]
    }
    # Discarded: recorded, gone from the dead letters, no longer replayable or discardable.
    assert await conn.fetchval(
        "SELECT status = 'discarded' AND discarded_at IS NOT NULL FROM courier.deliveries"
        " WHERE id = $1",
        b_ids[0],
    )
    for method, path in (
        ("GET", f"/api/v1/dead-letters/{b_ids[0]}"),
        ("DELETE", f"/api/v1/dead-letters/{b_ids[0]}"),
        ("POST", f"/api/v1/dead-letters/{b_ids[0]}/replay"),
    ):
        assert (await api.request(method, path, headers=AUTH)).status == 404
    # Bulk replay by filter, then again: the second queues nothing.
    body = {"endpoint_id": a["id"], "event_type": "kind.0"}
    first = await _json(await api.post("/api/v1/dead-letters/replay", headers=AUTH, json=body))
    assert sorted(first["replayed"]) == [a_ids[0], a_ids[2], a_ids[4]]
    second = await _json(await api.post("/api/v1/dead-letters/replay", headers=AUTH, json=body))
    assert second == {"replayed": [], "count": 0}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("endpoint_id=nope", "endpoint_id"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ("cursor=garbage", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ],
)
async def test_bad_dead_letter_filters_name_the_field(api: Any, query: Any, field: Any) -> None:
    response = await api.get(f"/api/v1/dead-letters?{query}", headers=AUTH)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field


async def test_bulk_replay_refuses_ids_with_filters(api: Any) -> None:
    body = {"ids": [1], "event_type": "a"}
    response = await api.post("/api/v1/dead-letters/replay", headers=AUTH, json=body)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "ids"


async def test_oversized_bodies_get_a_json_413(api: Any) -> None:
    response = await api.post(
        "/api/v1/events",
        headers={**AUTH, "Content-Type": "application/json"},
        data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"),
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_entity_too_large"


async def test_replay_of_a_recovered_endpoint_delivers_everything(
    api: Any, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    receiver.default = 500
    async with relay(retry_schedule=""):
        for i in range(3):
            await ops.enqueue(conn, "a.b", {"i": i})
        await wait_until(lambda: _dead_count(conn, 3))
        receiver.default = 200
        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        path = f"/api/v1/endpoints/{endpoint['id']}/recover"
        assert (await _json(await api.post(path, headers=AUTH, json={"since": since})))[
            "count"
        ] == 3
        await wait_until(lambda: _settled(conn, 3))
    assert len(receiver.requests) == 6


async def _dead_count(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await statuses(conn) == {"dead": n})
