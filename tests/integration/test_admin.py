"""The admin server's operational routes: health, readiness, Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.errors import ConfigurationError
from pgcourier.metrics import Metrics
from pgcourier.settings import load_settings
from tests.integration.helpers import TOKEN, Receiver, add_endpoint, statuses, wait_until


@dataclass
class FakeListener:
    connected: bool = True


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


async def test_health_and_readiness(aiohttp_client: Any, pool) -> None:
    listener = FakeListener()
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics(), listener)))
    assert (await client.get("/health")).status == 200
    response = await client.get("/ready")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}
    listener.connected = False
    response = await client.get("/ready")
    assert response.status == 503
    assert await response.json() == {
        "status": "unavailable",
        "reasons": ["LISTEN connection down (reconnecting)"],
    }


async def test_readiness_names_an_old_schema(aiohttp_client: Any, pool, conn) -> None:
    await conn.execute("DELETE FROM courier.migrations")
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics(), FakeListener())))
    response = await client.get("/ready")
    assert response.status == 503
    [reason] = (await response.json())["reasons"]
    assert "run pgcourier migrate" in reason


async def test_metrics_after_real_deliveries(conn, receiver: Receiver, relay) -> None:
    await add_endpoint(conn, receiver.url("/ok"), ["order.*"])
    await add_endpoint(conn, receiver.url("/dead"), ["order.*"])
    receiver.script["/dead"] = [500] * 10
    for i in range(3):
        await ops.enqueue(conn, "order.paid", {"i": i})
    async with relay(retry_schedule="50ms") as rt:
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = 3 FROM courier.dead_letters"), timeout=10
        )
        reg = rt.metrics.registry
        assert reg.get_sample_value("pgcourier_deliveries_total", {"outcome": "delivered"}) == 3
        assert reg.get_sample_value("pgcourier_deliveries_total", {"outcome": "retry"}) == 3
        assert reg.get_sample_value("pgcourier_deliveries_total", {"outcome": "dead"}) == 3
        assert reg.get_sample_value("pgcourier_delivery_duration_seconds_count") == 9
        assert reg.get_sample_value("pgcourier_delivery_lag_seconds_count") == 3
        assert reg.get_sample_value("pgcourier_claim_batch_size_count") >= 1
        # Scraped over HTTP from the relay's own admin server (bound to a free port).
        assert rt.admin_port
        url = f"http://127.0.0.1:{rt.admin_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            text = await response.text()
        assert "pgcourier_dead_letters 3.0" in text
        assert "pgcourier_pending_deliveries 0.0" in text
        assert "pgcourier_listener_connected 1.0" in text
        assert 'pgcourier_deliveries_total{outcome="delivered"} 3.0' in text
        # Per-endpoint series are off by default: label cardinality stays bounded.
        assert "pgcourier_endpoint_deliveries" not in text


async def test_per_endpoint_counts_when_asked_for(conn, receiver: Receiver, relay) -> None:
    ok = await add_endpoint(conn, receiver.url("/ok"))
    bad = await add_endpoint(conn, receiver.url("/bad"))
    receiver.script["/bad"] = [500]
    await ops.enqueue(conn, "order.paid", {})
    async with relay(retry_schedule="50ms", metrics_endpoint_labels=True) as rt:
        await wait_until(lambda: _two_delivered(conn))
        reg = rt.metrics.registry
        name = "pgcourier_endpoint_deliveries_total"
        assert reg.get_sample_value(name, {"endpoint_id": ok["id"], "outcome": "delivered"}) == 1
        assert reg.get_sample_value(name, {"endpoint_id": bad["id"], "outcome": "retry"}) == 1
        assert reg.get_sample_value(name, {"endpoint_id": bad["id"], "outcome": "delivered"}) == 1


async def _two_delivered(conn: asyncpg.Connection) -> bool:
    return bool(await statuses(conn) == {"delivered": 2})


async def test_pending_gauges_count_work_not_yet_done(aiohttp_client: Any, pool, conn) -> None:
    await ops.create_endpoint(conn, url="http://127.0.0.1:1/x", event_types=["*"])
    for _ in range(2):
        await ops.enqueue(conn, "a.b", {})
    metrics = Metrics()
    client = await aiohttp_client(create_app(AdminContext(pool, metrics, FakeListener())))
    assert (await client.get("/metrics")).status == 200
    assert metrics.pending_deliveries._value.get() == 0  # not fanned out yet: no deliveries
    assert metrics.oldest_pending_age._value.get() > 0  # ...but two events are waiting


def test_admin_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="PGCOURIER_ADMIN_TOKEN"):
        load_settings(admin_host="0.0.0.0")
    assert load_settings(admin_host="0.0.0.0", admin_token=TOKEN).admin_port == 8787
    assert load_settings(admin_host="::1").admin_host == "::1"
    assert load_settings(admin_host="0.0.0.0", admin_enabled=False).admin_enabled is False
