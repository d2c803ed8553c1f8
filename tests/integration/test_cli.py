"""The pgcourier command as a user runs it: a real process, real Postgres, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcourier import db, ops
from tests.integration.attempts import all_attempts
from tests.integration.helpers import Receiver, add_endpoint, relay_settings, statuses, wait_until


def cli_env(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCOURIER_")}
    if dsn is not None:
        env["PGCOURIER_DATABASE_URL"] = dsn
    env["PGCOURIER_LOG_FORMAT"] = "json"
    env["PGCOURIER_ADMIN_PORT"] = "0"
    env["PGCOURIER_ALLOW_NETWORKS"] = "127.0.0.0/8,::1/128"  # receivers listen on loopback
    env.update(extra)
    return env


async def pgcourier(
    *args: str, dsn: str | None, timeout: float = 60, text: bool = False, **extra: str
) -> tuple[int, str, str]:
    """Run the command; results come back as JSON (``--json``) unless ``text``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        *(() if text else ("--json",)),
        *args,
        env=cli_env(dsn, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    # communicate() has reaped the process; wait() returns its exit code as an int.
    return await proc.wait(), out.decode(), err.decode()


async def start_relay_process(dsn: str, **extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "run",
        env=cli_env(dsn, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_endpoint_add_prints_id_and_secret_once(dsn: str) -> None:
    code, out, _ = await pgcourier(
        "endpoint",
        "add",
        "--url",
        "https://example.com/hook",
        "--event",
        "order.*",
        "--event",
        "request_submitted",
        dsn=dsn,
    )
    assert code == 0
    created = json.loads(out)
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["order.*", "request_submitted"]
    code, out, _ = await pgcourier("endpoint", "list", dsn=dsn)
    assert code == 0
    [listed] = json.loads(out)
    assert listed["id"] == created["id"]
    assert "secret" not in listed
    for command, enabled in (("disable", False), ("enable", True)):
        code, out, _ = await pgcourier("endpoint", command, created["id"], dsn=dsn)
        assert code == 0
        assert json.loads(out)["enabled"] is enabled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["endpoint", "add", "--url", "ftp://x", "--event", "a"], "http:// or https://"),
        (["endpoint", "add", "--url", "https://x", "--event", "a b"], "'a b' is not a pattern"),
        (["endpoint", "add", "--url", "https://x", "--event", "a", "--secret", "s"], "whsec_"),
        (["endpoint", "disable", "not-a-uuid"], "'not-a-uuid' is not a UUID"),
        (["endpoint", "disable", "00000000-0000-0000-0000-000000000000"], "no endpoint"),
        (["enqueue", "bad type", "{}"], "invalid event_type 'bad type'"),
        (["enqueue", "a.b", "[1]"], "payload must be a JSON object"),
        (["enqueue", "a.b", "{nope"], "payload is not JSON"),
        (["dlq", "replay"], "give dead-letter ids, or --all"),
        (["dlq", "replay", "1", "--all"], "not both"),
        (["endpoint", "update", "00000000-0000-0000-0000-000000000000"], "nothing to change"),
        (["endpoint", "add", "--url", "https://x", "--event", "a", "--header", "Host:x"], "Host"),
        (["endpoint", "add", "--url", "https://x", "--event", "a", "--timeout", "0"], "timeout"),
        (["endpoint", "rotate-secret", "not-a-uuid"], "not a UUID"),
        (
            ["endpoint", "add", "--url", "https://x", "--event", "a", "--max-in-flight", "0"],
            "max_in_flight",
        ),
        (
            ["endpoint", "add", "--url", "https://x", "--event", "a", "--permanent-status", "200"],
            "permanent_statuses",
        ),
        (
            [
                "endpoint",
                "add",
                "--url",
                "https://x",
                "--event",
                "a",
                "--scheme",
                "github",
                "--secret",
                "short",
            ],
            "16 to 500",
        ),
        (
            ["endpoint", "add", "--url", "https://x", "--event", "a", "--scheme", "svix"],
            "invalid choice",
        ),
        (["endpoint", "stats", "x", "--window", "soon"], "soon"),
        (["dlq", "list", "--limit", "0"], "limit must be between"),
        (["frobnicate"], "invalid choice"),
    ],
)
async def test_bad_input_is_one_line_and_changes_nothing(dsn: str, args: Any, message: Any) -> None:
    code, out, err = await pgcourier(*args, dsn=dsn)
    assert code != 0
    assert out == ""
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # logs are JSON
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM courier.endpoints") == 0
        assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0
    finally:
        await conn.close()


async def test_invalid_settings_give_one_line_per_problem(dsn: str) -> None:
    code, _out, err = await pgcourier(
        "migrate", dsn=dsn, PGCOURIER_POLL_INTERVAL="-1", PGCOURIER_LOG_LEVEL="loud"
    )
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("pgcourier: invalid setting PGCOURIER_POLL_INTERVAL:")
    assert lines[1].startswith("pgcourier: invalid setting PGCOURIER_LOG_LEVEL:")


async def test_unreachable_database_is_one_line(empty_dsn: str) -> None:
    code, _, err = await pgcourier(
        "migrate", dsn="postgresql://nobody@127.0.0.1:1/none", timeout=30
    )
    assert code == 1
    assert err.strip().startswith("pgcourier: error:")
    assert len(err.strip().splitlines()) == 1


async def test_migrate_is_idempotent(empty_dsn: str) -> None:
    code, out, _ = await pgcourier("migrate", dsn=empty_dsn)
    assert code == 0
    assert json.loads(out)["applied"] == list(range(1, db.LATEST_VERSION + 1))
    code, out, _ = await pgcourier("migrate", dsn=empty_dsn)
    assert json.loads(out)["applied"] == []


async def test_enqueue_dlq_list_and_replay(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.script["/hook"] = [500]
    code, out, _ = await pgcourier("enqueue", "order.paid", '{"n": 1}', dsn=dsn)
    assert code == 0
    event_id = json.loads(out)["id"]
    async with relay(retry_schedule=""):
        await wait_until(lambda: _dead(conn))
        code, out, _ = await pgcourier("dlq", "list", dsn=dsn)
        [dead] = json.loads(out)["data"]
        assert dead["event_id"] == event_id
        code, out, _ = await pgcourier("dlq", "list", dsn=dsn, text=True)
        header, row = out.splitlines()
        assert header.split()[:3] == ["id", "event_id", "event_type"]
        assert row.split()[:3] == [str(dead["id"]), event_id, "order.paid"]
        code, out, _ = await pgcourier("dlq", "replay", "--all", dsn=dsn)
        assert json.loads(out) == {"replayed": [dead["id"]], "count": 1}
        await receiver.wait_count(2)
        await wait_until(lambda: _delivered_all(conn))
    assert receiver.ids() == {event_id: 2}


async def test_dlq_replay_of_one_id_restarts_the_retry_schedule(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    await add_endpoint(conn, receiver.url("/down"))
    receiver.default = 500
    event_id = await ops.enqueue(conn, "a.b", {})
    async with relay(retry_schedule="50ms,50ms"):
        await wait_until(lambda: _dead(conn))
        [dead] = (await ops.list_dead(conn))["data"]
        code, out, _ = await pgcourier("dlq", "replay", str(dead["id"]), dsn=dsn)
        assert (code, json.loads(out)) == (0, {"replayed": [dead["id"]], "count": 1})
        await wait_until(lambda: _dead(conn))
    # Three attempts before the replay and three after: the schedule started over. Kept, the
    # replayed delivery would be dead after one attempt (its schedule already spent).
    attempts = await all_attempts(conn, str(event_id))
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "retry"),
        (2, "retry"),
        (3, "dead"),
        (4, "retry"),
        (5, "retry"),
        (6, "dead"),
    ]


async def _dead(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM courier.dead_letters"))


async def _delivered_all(conn: asyncpg.Connection) -> bool:
    return (await statuses(conn)).keys() == {"delivered"}


async def test_sigterm_drains_in_flight_deliveries_and_exits_zero(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    await add_endpoint(conn, receiver.url("/slow"))
    receiver.delay["/slow"] = 1.0
    for i in range(3):
        await ops.enqueue(conn, "order.paid", {"i": i})
    proc = await start_relay_process(dsn)
    try:
        await receiver.wait_count(3, timeout=20)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert await statuses(conn) == {"delivered": 3}
    assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 0
    assert b'"relay stopped"' in err


async def test_sigterm_releases_leases_when_the_drain_times_out(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    await add_endpoint(conn, receiver.url("/stuck"))
    receiver.delay["/stuck"] = 8
    await ops.enqueue(conn, "order.paid", {})
    proc = await start_relay_process(
        dsn,
        PGCOURIER_SHUTDOWN_TIMEOUT="200ms",
        PGCOURIER_DELIVERY_TIMEOUT="5s",
        PGCOURIER_LEASE="60s",
    )
    try:
        await receiver.wait_count(1, timeout=20)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0
    row = await conn.fetchrow(
        "SELECT status, lease_token, next_attempt_at <= now() AS due FROM courier.deliveries"
    )
    # Handed back, due at once: another relay need not wait 60 s for the lease to run out.
    assert dict(row) == {"status": "pending", "lease_token": None, "due": True}


async def test_kill_9_mid_delivery_loses_nothing(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    receiver.delay["/hook"] = 0.8
    ids = {str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(5)}
    proc = await start_relay_process(dsn, PGCOURIER_LEASE="2s", PGCOURIER_DELIVERY_TIMEOUT="1s")
    try:
        await receiver.wait_count(1, timeout=20)
        proc.kill()  # SIGKILL: no drain, no release, no goodbye
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert await conn.fetchval("SELECT count(*) FROM courier.attempts") == 0
    receiver.delay.pop("/hook")
    from pgcourier.runtime import running

    async with running(relay_settings(dsn), dsn):
        await wait_until(lambda: _delivered_all(conn), timeout=15)
    assert set(receiver.ids()) == ids  # duplicates allowed, each with its webhook-id
    assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM courier.attempts") == 5


async def test_embedded_default_when_no_database_url(tmp_path: Path) -> None:
    env: dict[str, Any] = {"PGCOURIER_DATA_DIR": str(tmp_path / "data")}
    code, out, _ = await pgcourier("enqueue", "order.paid", '{"n": 1}', dsn=None, **env)
    assert code == 0, out
    code, dsn_out, _ = await pgcourier("dsn", dsn=None, **env)
    assert code == 0
    assert dsn_out.startswith("postgresql://")
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    # The data persisted across runs: the event enqueued by the first process is there.
    code, out, _ = await pgcourier("endpoint", "list", dsn=None, **env)
    assert code == 0
    assert json.loads(out) == []


async def test_demo_passes() -> None:
    code, out, err = await pgcourier("demo", dsn=None, timeout=90)
    assert code == 0, out + err
    assert "demo passed" in out
    assert out.count("verified") >= 3


async def test_events_and_endpoint_show_commands(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver, relay: Any
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    event_id = str(await ops.enqueue(conn, "order.paid", {"n": 1}))
    await ops.enqueue(conn, "user.created", {"n": 2})
    async with relay():
        await wait_until(lambda: _delivered_all(conn))
    code, out, _ = await pgcourier("endpoint", "show", endpoint["id"], dsn=dsn)
    assert code == 0
    assert json.loads(out)["url"] == receiver.url("/hook")
    code, out, _ = await pgcourier("events", "list", "--type", "order.paid", dsn=dsn)
    assert code == 0
    page = json.loads(out)
    assert [e["id"] for e in page["data"]] == [event_id]
    assert page["next_cursor"] is None
    code, out, _ = await pgcourier("events", "show", event_id, dsn=dsn)
    assert json.loads(out)["deliveries"][0]["status"] == "delivered"
    code, out, _ = await pgcourier("events", "attempts", event_id, dsn=dsn)
    [attempt] = json.loads(out)["data"]
    assert (attempt["status_code"], attempt["outcome"]) == (200, "delivered")
    code, _, err = await pgcourier("events", "list", "--since", "2026-01-01", dsn=dsn)
    assert code == 2
    assert "needs a time zone" in err
    code, _, err = await pgcourier("events", "show", str(uuid.uuid4()), dsn=dsn)
    assert code == 1
    assert "no event" in err


async def test_endpoint_policy_options(dsn: str) -> None:
    code, out, err = await pgcourier(
        "endpoint",
        "add",
        "--url",
        "https://example.com/h",
        "--event",
        "order.*",
        "--scheme",
        "github",
        "--secret",
        "It's a Secret to Everybody",
        "--permanent-status",
        "404",
        "--permanent-status",
        "400",
        "--max-in-flight",
        "3",
        "--rate-limit",
        "2.5",
        dsn=dsn,
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["secret"] == "It's a Secret to Everybody"
    assert (created["signature_scheme"], created["permanent_statuses"]) == ("github", [400, 404])
    assert (created["max_in_flight"], created["rate_limit"]) == (3, 2.5)
    code, out, err = await pgcourier(
        "endpoint",
        "update",
        created["id"],
        "--rate-limit",
        "none",
        "--clear-permanent-statuses",
        "--max-in-flight",
        "20",
        dsn=dsn,
    )
    assert code == 0, err
    updated = json.loads(out)
    assert (updated["rate_limit"], updated["permanent_statuses"]) == (None, [])
    assert updated["max_in_flight"] == 20
    # Back to the standard scheme needs a whsec_ secret first: a clear refusal, nothing changed.
    code, out, err = await pgcourier(
        "endpoint", "update", created["id"], "--scheme", "standard", dsn=dsn
    )
    assert code == 1
    assert "signature_scheme" in err or "secret" in err
    code, out, _ = await pgcourier("endpoint", "show", created["id"], dsn=dsn)
    assert json.loads(out)["signature_scheme"] == "github"


async def test_readme_endpoint_and_dlq_commands(conn: asyncpg.Connection, dsn: str) -> None:
    """The README's endpoint and dead-letter commands, each run as a user runs it."""

    async def ok(*args: str) -> Any:
        code, out, err = await pgcourier(*args, dsn=dsn)
        assert code == 0, err
        return json.loads(out)

    endpoint = await ok("endpoint", "add", "--url", "https://example.com/hook", "--event", "a.*")
    eid = endpoint["id"]
    updated = await ok(
        "endpoint",
        "update",
        eid,
        "--url",
        "https://new.example/hook",
        "--timeout",
        "5",
        "--header",
        "X-Team:core",
    )
    assert (updated["url"], updated["timeout_seconds"]) == ("https://new.example/hook", 5)
    assert updated["headers"] == {"X-Team": "core"}
    rotated = await ok("endpoint", "rotate-secret", eid, "--grace", "1h")
    assert rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret_expires_at"] is not None
    # Two dead letters, made by hand (no relay needed to exercise the commands).
    for _ in range(2):
        await ops.enqueue(conn, "a.b", {})
    await conn.execute(
        "INSERT INTO courier.dead_letters (event_id, endpoint_id, dead_at, last_error)"
        " SELECT id, $1, now(), 'HTTP 500' FROM courier.outbox",
        uuid.UUID(eid),
    )
    await conn.execute("UPDATE courier.outbox SET fanned_out_at = now()")
    stats = await ok("endpoint", "stats", eid, "--window", "1h")
    assert stats["dead"] == 2
    dead = (await ok("dlq", "list", "--endpoint", eid))["data"]
    assert len(dead) == 2
    shown = await ok("dlq", "show", str(dead[0]["id"]))
    assert shown["event_type"] == "a.b"
    assert await ok("dlq", "discard", str(dead[0]["id"])) == {"discarded": [dead[0]["id"]]}
    replayed = await ok("dlq", "replay", "--all", "--endpoint", eid)
    assert replayed == {"replayed": [dead[1]["id"]], "count": 1}
    await conn.execute(  # the replayed delivery dies again
        "WITH m AS (DELETE FROM courier.queue RETURNING *) INSERT INTO courier.dead_letters"
        " (id, event_id, endpoint_id, attempts, schedule_base, created_at)"
        " SELECT id, event_id, endpoint_id, attempts, schedule_base, created_at FROM m"
    )
    recovered = await ok("endpoint", "recover", eid, "--since", "2020-01-01T00:00:00Z")
    assert recovered["count"] == 1
    slack = await ok(
        "endpoint",
        "add",
        "--slack-channel",
        "#deploys",
        "--event",
        "deploy.*",
        "--template",
        "Deployed {data.service}",
    )
    assert (slack["kind"], slack["slack_channel"]) == ("slack", "#deploys")
    deleted = await ok("endpoint", "delete", eid)
    assert deleted == {"deleted": eid, "discarded": 1}
    listed = await ok("endpoint", "list")
    assert [e["id"] for e in listed] == [slack["id"]]
