"""README promises that had no test: each one checked the way a user would meet it.

Real processes (``pgcourier run`` and CLI commands) where the promise is about them, real
Postgres throughout, including one that is stopped and started again to see ``/ready`` answer 503.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from pgcourier import ops, pools
from pgcourier.embedded import EmbeddedPostgres
from pgcourier.errors import ConfigurationError, InvalidInput
from pgcourier.runtime import running
from pgcourier.sealing import Keyring, generate_key, is_sealed
from pgcourier.settings import load_settings
from tests.integration.helpers import Receiver, add_endpoint, wait_until
from tests.integration.test_cli import pgcourier
from tests.integration.test_settings_wiring import (
    AUTH,
    JSON_BODY,
    TOKEN,
    endpoint_row,
    pgcourier_run,
    wait_attempts,
)

# -- RELAY_SYNCHRONOUS_COMMIT ---------------------------------------------------------------------


async def _database_commits_synchronously(dsn: str) -> None:
    # The test server runs with synchronous_commit off (for speed); make this database's own
    # default "on", as on a normal server, so that "off" can only come from the relay's setting.
    async with pools.connection(dsn) as conn:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')


@pytest.mark.parametrize(("value", "expected"), [(True, "on"), (False, "off")])
async def test_create_pool_sets_synchronous_commit(dsn: str, value: bool, expected: str) -> None:
    await _database_commits_synchronously(dsn)
    pool = await pools.create_pool(dsn, min_size=1, max_size=2, synchronous_commit=value)
    try:
        assert await pool.fetchval("SHOW synchronous_commit") == expected
    finally:
        await pool.close()


async def test_relay_synchronous_commit_false_from_the_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _database_commits_synchronously(dsn)
    for name in list(os.environ):
        if name.startswith("PGCOURIER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGCOURIER_DATABASE_URL", dsn)
    monkeypatch.setenv("PGCOURIER_ADMIN_PORT", "0")
    monkeypatch.setenv("PGCOURIER_RELAY_SYNCHRONOUS_COMMIT", "false")
    settings = load_settings()
    async with running(settings, dsn) as rt:
        # Every session of the relay's pool commits asynchronously...
        async with rt.pool.acquire() as a, rt.pool.acquire() as b:
            assert [await c.fetchval("SHOW synchronous_commit") for c in (a, b)] == ["off", "off"]
        # ...while producers keep the database's setting.
        async with pools.connection(dsn) as producer:
            assert await producer.fetchval("SHOW synchronous_commit") == "on"


async def test_claims_commit_asynchronously_and_outcomes_synchronously(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim lost to a crash is only claimed again, so it does not wait for its WAL flush;
    # attempts and outcomes do (RELAY_SYNCHRONOUS_COMMIT defaults to true).
    await _database_commits_synchronously(dsn)
    for name in list(os.environ):
        if name.startswith("PGCOURIER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGCOURIER_DATABASE_URL", dsn)
    monkeypatch.setenv("PGCOURIER_ADMIN_PORT", "0")
    async with running(load_settings(), dsn) as rt:
        assert rt.claim_pool is not None
        assert await rt.claim_pool.fetchval("SHOW synchronous_commit") == "off"
        assert await rt.pool.fetchval("SHOW synchronous_commit") == "on"
        # The relay claims through it: its one connection runs courier.claim.
        async with pools.connection(dsn) as conn:
            claiming = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE '%courier.claim(%'"
            )
        assert claiming >= 1


# -- AUTO_MIGRATE=false ---------------------------------------------------------------------------


async def _has_schema(dsn: str) -> bool:
    async with pools.connection(dsn) as conn:
        return bool(await conn.fetchval("SELECT to_regclass('courier.outbox') IS NOT NULL"))


async def test_auto_migrate_false_leaves_the_schema_to_pgcourier_migrate(
    empty_dsn: str, receiver: Receiver
) -> None:
    # CLI commands refuse, in one line naming the fix, and create nothing.
    code, out, err = await pgcourier(
        "events", "list", dsn=empty_dsn, PGCOURIER_AUTO_MIGRATE="false"
    )
    assert (code, out) == (1, "")
    [line] = err.strip().splitlines()
    assert "schema is at version 0" in line
    assert "pgcourier migrate" in line
    assert not await _has_schema(empty_dsn)

    async with (
        pgcourier_run(empty_dsn, PGCOURIER_AUTO_MIGRATE="false") as relay,
        aiohttp.ClientSession() as http,
    ):
        # The relay starts without migrating and says so where operators look: /ready.
        async with http.get(f"{relay.base_url}/ready") as response:
            assert response.status == 503
            reasons = (await response.json())["reasons"]
        assert any("run pgcourier migrate" in r for r in reasons), reasons
        assert not await _has_schema(empty_dsn)

        # Once an operator migrates, the same relay becomes ready and delivers.
        code, out, err = await pgcourier("migrate", dsn=empty_dsn)
        assert code == 0, err

        async def ready() -> bool:
            async with http.get(f"{relay.base_url}/ready") as response:
                return response.status == 200

        await wait_until(ready, timeout=20)
        async with pools.connection(empty_dsn) as conn:
            await add_endpoint(conn, receiver.url("/hook"))
            event_id = str(await ops.enqueue(conn, "order.paid", {}))
        await receiver.wait_count(1, timeout=20)
    assert receiver.ids() == {event_id: 1}


async def test_a_relay_on_an_older_schema_waits_for_the_migration_then_delivers(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, relay: Any
) -> None:
    # A new version started before `pgcourier migrate` (AUTO_MIGRATE=false): the schema lacks
    # the newest migration (its record removed here; its objects stay, so this also shows the
    # relay reads the version, not what happens to be there).
    latest = await conn.fetchrow(
        "DELETE FROM courier.migrations WHERE version = (SELECT max(version) FROM "
        "courier.migrations) RETURNING *"
    )
    endpoint = await add_endpoint(conn, receiver.url("/hook"))  # its secret stored plain
    stored = "SELECT secret FROM courier.endpoints WHERE id = $1"
    event_id = str(await ops.enqueue(conn, "order.paid", {}))
    key = generate_key()
    with capture_logs() as logs:
        async with (
            relay(admin_token=TOKEN, secret_key=key) as rt,
            aiohttp.ClientSession() as http,
        ):
            ready_url = f"http://127.0.0.1:{rt.admin_port}/ready"

            async def told() -> bool:
                return any(e["event"].startswith("waiting for the schema") for e in logs)

            await wait_until(told, timeout=10)
            [waiting] = [e for e in logs if e["event"].startswith("waiting for the schema")]
            assert (waiting["schema_version"], waiting["needs"]) == (
                latest["version"] - 1,
                latest["version"],
            )
            async with http.get(ready_url) as response:
                assert response.status == 503
                assert "run pgcourier migrate" in " ".join((await response.json())["reasons"])
            await asyncio.sleep(1.5)  # a poll and more: nothing is claimed meanwhile
            assert receiver.ids() == {}
            assert await conn.fetchval("SELECT count(*) FROM courier.attempts") == 0
            # Nor written: the key would encrypt the plain secret at start, in a schema whose
            # constraints may predate encryption (0010).
            assert not is_sealed(await conn.fetchval(stored, endpoint["id"]))

            # Migrated (the record back, as migrate() writes it): the same relay starts.
            await conn.execute(
                "INSERT INTO courier.migrations SELECT * FROM "
                "jsonb_populate_record(NULL::courier.migrations, $1::jsonb)",
                json.dumps({k: str(v) for k, v in dict(latest).items()}),
            )
            await receiver.wait_count(1, timeout=20)
            async with http.get(ready_url) as response:
                assert response.status == 200
    assert receiver.ids() == {event_id: 1}
    assert any(e["event"] == "schema migrated: starting" for e in logs)
    assert is_sealed(await conn.fetchval(stored, endpoint["id"]))  # the start-up check, once


async def test_a_key_that_opens_nothing_ends_a_relay_that_waited_for_the_schema(
    dsn: str, conn: asyncpg.Connection, relay: Any
) -> None:
    # The start-up check runs once the schema is migrated, and refuses as it does at start:
    # one ConfigurationError out of the relay, not an exception group.
    await ops.create_endpoint(
        conn, url="https://example.com/h", event_types=["*"], keyring=Keyring(generate_key())
    )
    latest = await conn.fetchrow(
        "DELETE FROM courier.migrations WHERE version = (SELECT max(version) FROM "
        "courier.migrations) RETURNING *"
    )

    async def migrate_soon() -> None:
        await asyncio.sleep(0.5)
        await conn.execute(
            "INSERT INTO courier.migrations SELECT * FROM "
            "jsonb_populate_record(NULL::courier.migrations, $1::jsonb)",
            json.dumps({k: str(v) for k, v in dict(latest).items()}),
        )

    migrating = asyncio.create_task(migrate_soon())
    with pytest.raises(ConfigurationError, match="does not open the stored secrets"):
        async with relay(secret_key=generate_key()) as rt:
            await asyncio.wait_for(rt.stop.wait(), 20)
    await migrating


# -- /ready while the database is down ------------------------------------------------------------


async def test_ready_answers_503_while_the_database_is_down(tmp_path: Path) -> None:
    # A Postgres of this test's own, so that it can really be stopped and started again.
    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = await asyncio.to_thread(server.start)
    try:
        async with pgcourier_run(dsn) as relay, aiohttp.ClientSession() as http:
            url = f"{relay.base_url}/ready"

            async def ready_status() -> tuple[int, Any]:
                async with http.get(url) as response:
                    return response.status, await response.json()

            async def status_is(expected: int) -> bool:
                return (await ready_status())[0] == expected

            await wait_until(lambda: status_is(200), timeout=20)
            await asyncio.to_thread(server.stop)
            status, body = await ready_status()
            assert status == 503
            assert body["status"] == "unavailable"
            assert any(r.startswith("database unreachable") for r in body["reasons"]), body
            # Back up: ready again, without restarting the relay.
            await asyncio.to_thread(server.start)
            await wait_until(lambda: status_is(200), timeout=30)
    finally:
        await asyncio.to_thread(server.stop)


# -- the admin server's body limit, MAX_PAYLOAD_BYTES, CIRCUIT_MAX_COOLDOWN -----------------------


def _padded_event(size: int) -> io.BytesIO:
    """A valid POST /events body of exactly ``size`` bytes (JSON allows trailing whitespace).
    A file object: aiohttp warns that sending megabytes of raw bytes blocks its event loop."""
    body = json.dumps({"event_type": "pad.ded", "payload": {"n": 1}}).encode()
    return io.BytesIO(body + b" " * (size - len(body)))


async def test_payload_limit_body_limit_and_max_cooldown_from_the_environment(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    payload_limit = 1_000_000
    receiver.default = 500
    failing = UUID((await add_endpoint(conn, receiver.url("/fail"), ["fail.*"]))["id"])
    # A circuit that has failed many probes already: its next cool-down would double to 2000 s.
    await conn.execute(
        "UPDATE courier.endpoints SET circuit_state = 'open', consecutive_failures = 9,"
        " circuit_until = now() - interval '1 second', circuit_cooldown = 1000 WHERE id = $1",
        failing,
    )
    async with (
        pgcourier_run(
            dsn,
            PGCOURIER_ADMIN_TOKEN=TOKEN,
            PGCOURIER_MAX_PAYLOAD_BYTES=str(payload_limit),
            PGCOURIER_CIRCUIT_MAX_COOLDOWN="90s",
        ) as relay,
        aiohttp.ClientSession() as http,
    ):
        # MAX_PAYLOAD_BYTES is pushed into the database by `run`.
        with pytest.raises(InvalidInput, match="over the limit of 1000000 bytes"):
            await ops.enqueue(conn, "big.one", {"s": "x" * payload_limit})

        # Request bodies: twice the payload limit is accepted (JSON escaping can double a
        # payload); beyond the limit the runtime sets (plus 64 KiB for the envelope), 413 JSON.
        events = f"{relay.base_url}/api/v1/events"
        headers = {**AUTH, **JSON_BODY}
        async with http.post(events, data=_padded_event(2 * payload_limit), headers=headers) as r:
            assert r.status == 201, await r.text()
        too_big = _padded_event(2 * payload_limit + 64 * 1024 + 1)
        async with http.post(events, data=too_big, headers=headers) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_entity_too_large"

        # CIRCUIT_MAX_COOLDOWN=90s: the failed probe doubles the cool-down, capped at 90 s.
        await ops.enqueue(conn, "fail.probe", {})
        await wait_attempts(conn, failing, 1)
        row = await endpoint_row(conn, failing)
        assert (row["circuit_state"], row["circuit_cooldown"]) == ("open", 90.0)
        until = await conn.fetchval(
            "SELECT extract(epoch FROM circuit_until - now())::float8"
            " FROM courier.endpoints WHERE id = $1",
            failing,
        )
        assert 80 < until <= 90


# -- CLI: --json after the command, list filters and cursors, replaying one dead letter ---------


async def _cli(dsn: str, *args: str) -> Any:
    """Run a command with ``--json`` placed after it (as the README allows); parse stdout."""
    code, out, err = await pgcourier(*args, "--json", dsn=dsn, text=True)
    assert code == 0, err
    return json.loads(out)


async def test_json_after_the_command_and_events_list_filters(
    conn: asyncpg.Connection, dsn: str
) -> None:
    ids = [str(await ops.enqueue(conn, f"a.n{i}", {"i": i})) for i in range(3)]
    times = {
        str(r["id"]): r["created_at"]
        for r in await conn.fetch("SELECT id, created_at FROM courier.outbox")
    }
    newest_first = list(reversed(ids))

    first = await _cli(dsn, "events", "list", "--limit", "2")
    assert [e["id"] for e in first["data"]] == newest_first[:2]
    assert first["next_cursor"]
    rest = await _cli(dsn, "events", "list", "--limit", "2", "--cursor", first["next_cursor"])
    assert [e["id"] for e in rest["data"]] == newest_first[2:]
    assert rest["next_cursor"] is None

    # --until is exclusive, --since inclusive (ISO-8601 with a zone).
    until = await _cli(dsn, "events", "list", "--until", times[ids[2]].isoformat())
    assert [e["id"] for e in until["data"]] == [ids[1], ids[0]]
    window = await _cli(
        dsn,
        "events",
        "list",
        "--since",
        times[ids[1]].isoformat(),
        "--until",
        times[ids[2]].isoformat(),
    )
    assert [e["id"] for e in window["data"]] == [ids[1]]

    # Without --json the same command prints a table, not JSON.
    code, out, _ = await pgcourier("events", "list", dsn=dsn, text=True)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "data:"
    assert lines[1].split()[:2] == ["id", "event_type"]


async def test_dlq_list_type_since_until_and_cursor(conn: asyncpg.Connection, dsn: str) -> None:
    endpoint_id = UUID((await add_endpoint(conn, "https://example.com/hook"))["id"])
    # Four dead letters, one a minute, alternating types (made by hand: no relay needed).
    types = ["order.paid", "user.created", "order.paid", "user.created"]
    dead_ids: list[int] = []
    base: datetime = await conn.fetchval("SELECT date_trunc('second', now()) - interval '1 hour'")
    for minute, event_type in enumerate(types):
        event_id = await ops.enqueue(conn, event_type, {"minute": minute})
        dead_ids.append(
            await conn.fetchval(
                "INSERT INTO courier.dead_letters"
                " (event_id, endpoint_id, dead_at, last_error)"
                " VALUES ($1, $2, $3, 'HTTP 500') RETURNING id",
                event_id,
                endpoint_id,
                base + timedelta(minutes=minute),
            )
        )
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")

    def at(minute: int) -> str:
        return (base + timedelta(minutes=minute)).isoformat()

    def listed(page: Any) -> list[int]:
        return [d["id"] for d in page["data"]]

    orders = await _cli(dsn, "dlq", "list", "--type", "order.paid")
    assert listed(orders) == [dead_ids[2], dead_ids[0]]
    window = await _cli(dsn, "dlq", "list", "--since", at(1), "--until", at(3))
    assert listed(window) == [dead_ids[2], dead_ids[1]]  # since inclusive, until exclusive
    first = await _cli(dsn, "dlq", "list", "--limit", "3")
    assert listed(first) == dead_ids[:0:-1]
    rest = await _cli(dsn, "dlq", "list", "--limit", "3", "--cursor", first["next_cursor"])
    assert listed(rest) == [dead_ids[0]]
    assert rest["next_cursor"] is None
    combined = await _cli(
        dsn,
        "dlq",
        "list",
        "--type",
        "user.created",
        "--since",
        at(2),
        "--endpoint",
        str(endpoint_id),
    )
    assert listed(combined) == [dead_ids[3]]


async def test_dlq_replay_one_id_delivers_it(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [500]  # fails once, then answers 200
    event_id = str(await ops.enqueue(conn, "order.paid", {"n": 1}))
    async with relay(retry_schedule=""):
        await wait_until(lambda: conn.fetchval("SELECT count(*) FROM courier.dead_letters"))
        [dead] = (await _cli(dsn, "dlq", "list"))["data"]
        replayed = await _cli(dsn, "dlq", "replay", str(dead["id"]))
        assert replayed == {"replayed": [dead["id"]], "count": 1}
        await wait_until(
            lambda: conn.fetchval(
                "SELECT status = 'delivered' FROM courier.deliveries WHERE id = $1", dead["id"]
            )
        )
    # Delivered with the same webhook-id as the failed attempt; the dead letter is gone.
    assert receiver.ids() == {event_id: 2}
    assert (await _cli(dsn, "dlq", "list"))["data"] == []
