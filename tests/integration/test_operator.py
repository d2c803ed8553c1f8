"""The operator's session from the README, against real processes: `pgcourier run` and
`pgcourier admin`, driven over HTTP only (what curl does), with a real failing receiver."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.metrics import Metrics
from tests.integration.helpers import AUTH, TOKEN, Receiver, wait_until
from tests.integration.test_cli import cli_env


@asynccontextmanager
async def pgcourier_process(
    command: str, dsn: str, *, token: str | None = TOKEN, **extra: str
) -> AsyncIterator[str]:
    """Run ``pgcourier <command>`` with the admin server on a free port; yield its base URL.
    On exit: SIGTERM, and the process must exit 0."""
    env = cli_env(dsn, **({"PGCOURIER_ADMIN_TOKEN": token} if token is not None else {}), **extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        command,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        port = None
        while port is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "the process exited before serving the admin API"
            record = json.loads(line)
            if record.get("event") == "admin server listening":
                port = record["port"]
        drain = asyncio.create_task(proc.stderr.read())  # keep the pipe from filling up
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with http.get(url, headers=AUTH, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


# What the README's curl session sends: -H "$AUTH" -H "$JSON" -d '...'.
JSON = {"Content-Type": "application/json"}


async def _post(http: aiohttp.ClientSession, url: str, body: Any, status: int = 200) -> Any:
    async with http.post(url, headers={**AUTH, **JSON}, data=json.dumps(body)) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def test_readme_session_register_fail_dead_letter_fix_replay(
    dsn: str, receiver: Receiver
) -> None:
    receiver.default = 500  # the receiver is broken to begin with
    async with (
        pgcourier_process(
            "run",
            dsn,
            PGCOURIER_RETRY_SCHEDULE="100ms,100ms",
            # All nine failures in a row, without the circuit breaker holding the last ones
            # back for its cool-down (the README says so too).
            PGCOURIER_CIRCUIT_FAILURES="100",
        ) as base,
        aiohttp.ClientSession() as http,
    ):
        # 1. register an endpoint
        endpoint = await _post(
            http,
            f"{base}/api/v1/endpoints",
            {"url": receiver.url("/hook"), "event_types": ["order.*"]},
            201,
        )
        # 2. events arrive (here through the API; services use courier.enqueue in SQL)
        events = [
            (
                await _post(
                    http,
                    f"{base}/api/v1/events",
                    {"event_type": "order.paid", "payload": {"n": n}},
                    201,
                )
            )["id"]
            for n in range(3)
        ]
        # 3. watch the failing attempts, then the dead letters
        dead_path = f"{base}/api/v1/dead-letters?endpoint_id={endpoint['id']}"

        async def all_dead() -> bool:
            return len((await _get(http, dead_path))["data"]) == 3

        await wait_until(all_dead, timeout=20)
        attempts = (await _get(http, f"{base}/api/v1/events/{events[0]}/attempts"))["data"]
        assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
            (1, 500, "retry"),
            (2, 500, "retry"),
            (3, 500, "dead"),
        ]
        stats = await _get(http, f"{base}/api/v1/endpoints/{endpoint['id']}/stats")
        assert (stats["attempts"], stats["delivered"], stats["dead"]) == (9, 0, 3)
        # 4. fix the receiver, replay the endpoint's dead letters in bulk (twice: no duplicates)
        receiver.default = 200
        replay = f"{base}/api/v1/dead-letters/replay"
        first = await _post(http, replay, {"endpoint_id": endpoint["id"]})
        assert first["count"] == 3

        async def all_delivered() -> bool:
            details = [await _get(http, f"{base}/api/v1/events/{e}") for e in events]
            return all(d["deliveries"][0]["status"] == "delivered" for d in details)

        await wait_until(all_delivered, timeout=20)
        assert (await _post(http, replay, {"endpoint_id": endpoint["id"]}))["count"] == 0
        # 5. metrics agree
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        assert 'pgcourier_deliveries_total{outcome="delivered"} 3.0' in text
        assert 'pgcourier_deliveries_total{outcome="dead"} 3.0' in text
        assert "pgcourier_dead_letters 0.0" in text
    # Every event reached the receiver once successfully, with the same webhook-id each time.
    delivered = [r for r in receiver.requests if r.webhook_id in events]
    assert {r.webhook_id for r in delivered} == set(events)
    assert len(delivered) == 12  # 3 events x (3 failed attempts + 1 success)


async def test_admin_command_serves_the_api_without_a_relay(dsn: str) -> None:
    async with pgcourier_process("admin", dsn) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/ready") as response:
            assert response.status == 200  # no LISTEN connection to wait for
        async with http.get(f"{base}/api/v1/endpoints") as response:
            assert response.status == 401
        assert await _get(http, f"{base}/api/v1/endpoints") == {"data": []}
        await _post(http, f"{base}/api/v1/events", {"event_type": "a.b", "payload": {}}, 201)
        page = await _get(http, f"{base}/api/v1/events")
        # Nothing relays here: the event waits in the outbox for a relay.
        assert page["data"][0]["fanned_out_at"] is None
        # curl -d without -H "$JSON" sends a form: refused, and nothing is written.
        form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
        body = json.dumps({"event_type": "a.b", "payload": {}})
        async with http.post(f"{base}/api/v1/events", headers=form, data=body) as response:
            assert response.status == 415
        assert len((await _get(http, f"{base}/api/v1/events"))["data"]) == 1


def test_the_readme_session_declares_its_json_bodies() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    session = readme.split("### An operator's session", 1)[1].split("\n## ", 1)[0]
    assert 'export JSON="Content-Type: application/json"' in session
    posts = [line for line in session.splitlines() if line.startswith("curl") and " -d " in line]
    assert len(posts) == 4
    assert all('-H "$JSON"' in line for line in posts), posts


async def test_a_token_less_admin_serves_only_loopback_names(dsn: str) -> None:
    async with pgcourier_process("admin", dsn, token=None) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/endpoints") as response:
            assert response.status == 200  # no token: open to this machine's own tools
        rebound = {"Host": "evil.example:8787"}
        async with http.get(f"{base}/api/v1/endpoints", headers=rebound) as response:
            assert response.status == 403
        foreign = {**JSON, "Origin": "https://evil.example"}
        body = json.dumps({"url": "https://evil.example/all", "event_types": ["*"]})
        async with http.post(f"{base}/api/v1/endpoints", headers=foreign, data=body) as response:
            assert response.status == 403
        async with http.get(f"{base}/api/v1/endpoints") as response:
            assert (await response.json()) == {"data": []}


@pytest.mark.parametrize("open_operations", [True, False])
async def test_operations_routes_can_require_the_token(
    aiohttp_client: Any, dsn: str, open_operations: bool
) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        context = AdminContext(pool, Metrics(), None, TOKEN, open_operations=open_operations)
        client = await aiohttp_client(create_app(context))
        for path in ("/health", "/ready", "/metrics"):
            expected = 200 if open_operations else 401
            assert (await client.get(path)).status == expected
            assert (await client.get(path, headers=AUTH)).status == 200
    finally:
        await pool.close()
