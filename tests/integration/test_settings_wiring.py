"""Environment -> Settings -> relay, through the real ``pgcourier run`` process.

Other integration tests build Settings by hand and override most values, so they cannot notice a
setting that never reaches the relay (or a default that changed). Here each setting is given as an
environment variable to a real process, and its effect is read from outside: the database rows the
relay writes, the admin server's answers, the process's own log lines.

Processes cost about a second each, so one process checks several settings: ``tuned`` sets them,
``defaults`` leaves them alone (on an empty database, so AUTO_MIGRATE's default is exercised too).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from pgcourier import db, ops, pools
from tests.integration.helpers import wait_until
from tests.integration.test_cli import cli_env

# At least 32 characters: what the admin server asks of a token.
TOKEN = "settings-wiring-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_BODY = {"Content-Type": "application/json"}


@dataclass
class Process:
    """A running ``pgcourier run``: its stderr lines as they arrive, its admin URL if any."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    base_url: str | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closed: bool = False

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._arrived:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._arrived.notify_all()
        async with self._arrived:
            self._closed = True
            self._arrived.notify_all()

    async def wait_for_line(self, text: str, timeout: float = 30) -> str:
        """The first stderr line containing ``text``; fails if the process ends first."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        async def wait() -> str:
            async with self._arrived:
                await self._arrived.wait_for(lambda: found() is not None or self._closed)
            line = found()
            assert line is not None, f"process ended without logging {text!r}:\n{self.stderr}"
            return line

        return await asyncio.wait_for(wait(), timeout)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@contextlib.asynccontextmanager
async def pgcourier_run(
    dsn: str, *, ready: str = "admin server listening", unset: tuple[str, ...] = (), **env: str
) -> AsyncIterator[Process]:
    """Run ``pgcourier run`` with ``env`` (``PGCOURIER_...`` names) until a line containing
    ``ready`` is logged; on exit SIGTERM it, and it must exit 0. ``unset`` drops variables the
    test harness would otherwise set (e.g. ``PGCOURIER_LOG_FORMAT``, to exercise ``auto``)."""
    variables = cli_env(dsn, **env)
    for name in unset:
        variables.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "run",
        env=variables,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Process(proc)
    reader = asyncio.create_task(running.read_stderr())
    try:
        line = await running.wait_for_line(ready)
        if ready == "admin server listening":
            running.base_url = f"http://127.0.0.1:{json.loads(line)['port']}"
        yield running
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, running.stderr
        await asyncio.wait_for(reader, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()


# -- a receiver with a behaviour per path ---------------------------------------------------------


async def _handle(request: web.Request) -> web.Response:
    await request.read()
    path = request.path
    if path.startswith("/limited"):
        return web.Response(status=429, headers={"Retry-After": "7200"}, text="slow down")
    if path.startswith("/chatty"):
        return web.Response(status=500, text="x" * 10_000)
    if path.startswith("/slow"):
        await asyncio.sleep(3)
        return web.Response(status=200, text="late")
    if path.startswith("/fail"):
        return web.Response(status=500, text="nope")
    return web.Response(status=200, text="ok")


@pytest.fixture
async def site(aiohttp_server: Any) -> Callable[[str], str]:
    """``site("/path")``: the URL of that path on a loopback receiver (see ``_handle``)."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", _handle)
    server = await aiohttp_server(app)
    return lambda path: f"http://127.0.0.1:{server.port}{path}"


async def endpoint(conn: asyncpg.Connection, url: str, pattern: str, **options: Any) -> UUID:
    created = await ops.create_endpoint(conn, url=url, event_types=[pattern], **options)
    return UUID(created["id"])


async def enqueue(conn: asyncpg.Connection, event_type: str, n: int = 1) -> None:
    for i in range(n):
        await ops.enqueue(conn, event_type, {"i": i})


async def attempts_at(conn: asyncpg.Connection, endpoint_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM courier.attempts WHERE endpoint_id = $1 ORDER BY id", endpoint_id
    )
    return rows


async def wait_attempts(conn: asyncpg.Connection, endpoint_id: UUID, n: int) -> None:
    """Wait until ``n`` attempts at the endpoint are recorded and their outcomes applied."""

    async def done() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) >= $2 FROM courier.deliveries"
                " WHERE endpoint_id = $1 AND attempts > 0 AND lease_token IS NULL",
                endpoint_id,
                n,
            )
        )

    try:
        await wait_until(done, timeout=20)
    except AssertionError:
        row = await endpoint_row(conn, endpoint_id)
        state = {k: row[k] for k in ("enabled", "disabled_reason", "circuit_state")}
        raise AssertionError(
            f"{n} attempts at {endpoint_id} not recorded in time; {state}"
        ) from None


async def retry_delays(conn: asyncpg.Connection, endpoint_id: UUID) -> list[float]:
    """Seconds from each failed attempt to the retry it scheduled."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM next_attempt_at - last_attempt_at)::float8 AS s"
        " FROM courier.deliveries WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint_id,
    )
    return [r["s"] for r in rows]


async def make_failing_for_weeks(conn: asyncpg.Connection, endpoint_id: UUID) -> None:
    # As if the endpoint had been failing for 30 days (the relay reads failing_since to decide
    # whether DISABLE_AFTER has passed).
    await conn.execute(
        "UPDATE courier.endpoints SET failing_since = now() - interval '30 days',"
        " consecutive_failures = 1 WHERE id = $1",
        endpoint_id,
    )


async def endpoint_row(conn: asyncpg.Connection, endpoint_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM courier.endpoints WHERE id = $1", endpoint_id)
    assert row is not None
    return row


# -- the tests ------------------------------------------------------------------------------------


async def test_tuned_settings_reach_the_relay(
    conn: asyncpg.Connection, dsn: str, site: Callable[[str], str]
) -> None:
    limited = await endpoint(conn, site("/limited"), "limited.*")
    chatty = await endpoint(conn, site("/chatty"), "chatty.*")
    # Its own timeout is 300 s; half the 4 s lease caps it at 2 s, and the receiver takes 3 s.
    slow = await endpoint(conn, site("/slow"), "slow.*", timeout_seconds=300)
    old = await endpoint(conn, site("/fail-old"), "old.*")
    jittery = await endpoint(conn, site("/fail-jitter"), "jitter.*")
    await make_failing_for_weeks(conn, old)
    for event_type in ("limited.a", "chatty.a", "slow.a", "old.a"):
        await enqueue(conn, event_type)
    await enqueue(conn, "jitter.a", 12)
    async with (
        pgcourier_run(
            dsn,
            PGCOURIER_RETRY_AFTER_CAP="1s",
            PGCOURIER_RESPONSE_BODY_LIMIT="100",
            PGCOURIER_LEASE="4s",
            PGCOURIER_DELIVERY_TIMEOUT="1s",
            PGCOURIER_DISABLE_AFTER="0",
            PGCOURIER_ADMIN_OPEN_OPERATIONS="false",
            PGCOURIER_ADMIN_TOKEN=TOKEN,
            PGCOURIER_RETRY_SCHEDULE="30s",
            PGCOURIER_RETRY_JITTER="0.5",
            # Twelve failures in a row at one endpoint: keep its circuit from holding the last.
            PGCOURIER_CIRCUIT_FAILURES="100",
        ) as relay,
        aiohttp.ClientSession() as http,
    ):
        for endpoint_id in (limited, chatty, old, slow):
            await wait_attempts(conn, endpoint_id, 1)

        # RETRY_AFTER_CAP=1s: the receiver's "Retry-After: 7200" pauses the endpoint for 1 s,
        # and the retry follows the 30 s schedule instead of waiting two hours.
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM ep.paused_until - d.last_attempt_at)::float8 AS pause,"
            " extract(epoch FROM d.next_attempt_at - d.last_attempt_at)::float8 AS retry"
            " FROM courier.deliveries AS d JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id"
            " WHERE ep.id = $1",
            limited,
        )
        assert row["pause"] < 5, row
        assert row["retry"] < 60, row

        # RESPONSE_BODY_LIMIT=100: only 100 of the 10,000 bytes are kept.
        [attempt] = await attempts_at(conn, chatty)
        assert len(attempt["response_body"]) == 100

        # Per-endpoint timeout capped at half the lease (LEASE=4s): 2 s, not 300 s.
        [attempt] = await attempts_at(conn, slow)
        assert attempt["error"] == "timeout after 2s"

        # DISABLE_AFTER=0 means never: 30 days of failure and still enabled.
        row = await endpoint_row(conn, old)
        assert (row["enabled"], row["disabled_reason"]) == (True, None)

        # RETRY_JITTER=0.5 on a 30 s schedule: retries spread over 15-45 s, wider than the
        # default 0.2 allows (24-36 s). All twelve inside 24-36 s by chance: about 1 in 20,000.
        await wait_attempts(conn, jittery, 12)
        delays = await retry_delays(conn, jittery)
        assert len(delays) == 12
        assert all(14.9 < d < 46 for d in delays), delays
        assert any(d < 23.5 or d > 36.5 for d in delays), delays

        # ADMIN_OPEN_OPERATIONS=false: /metrics wants the token too.
        assert relay.base_url is not None
        async with http.get(f"{relay.base_url}/metrics") as response:
            assert response.status == 401
        async with http.get(f"{relay.base_url}/metrics", headers=AUTH) as response:
            assert response.status == 200


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


async def test_defaults_reach_the_relay(empty_dsn: str, site: Callable[[str], str]) -> None:
    # Nothing but what the harness needs (a database URL, a free admin port, loopback allowed
    # for the receiver); PGCOURIER_LOG_FORMAT unset, so "auto" decides.
    async with (
        pgcourier_run(empty_dsn, unset=("PGCOURIER_LOG_FORMAT",)) as relay,
        aiohttp.ClientSession() as http,
        pools.connection(empty_dsn) as conn,
    ):
        # AUTO_MIGRATE defaults to true: the empty database has the whole schema.
        assert await db.schema_version(conn) == db.LATEST_VERSION
        assert relay.base_url is not None

        # CIRCUIT_FAILURES defaults to 5: four failures leave the circuit closed...
        failing = await endpoint(conn, site("/fail"), "fail.*")
        await enqueue(conn, "fail.a", 4)
        await wait_attempts(conn, failing, 4)
        assert (await endpoint_row(conn, failing))["circuit_state"] == "closed"
        # ...the fifth opens it.
        await enqueue(conn, "fail.b")
        await wait_attempts(conn, failing, 5)
        assert (await endpoint_row(conn, failing))["circuit_state"] == "open"
        # RETRY_SCHEDULE starts with 5 s, RETRY_JITTER 0.2: each retry 4-6 s after its attempt.
        delays = await retry_delays(conn, failing)
        assert len(delays) == 5
        assert all(3.95 < d < 6.3 for d in delays), delays

        # DISABLE_AFTER defaults to 5 days: an endpoint failing for 30 days is disabled.
        old = await endpoint(conn, site("/fail-old"), "old.*")
        await make_failing_for_weeks(conn, old)
        # RETRY_AFTER_CAP defaults to 1 h: "Retry-After: 7200" pauses the endpoint for 1 h.
        limited = await endpoint(conn, site("/limited"), "limited.*")
        # RESPONSE_BODY_LIMIT defaults to 4096 bytes.
        chatty = await endpoint(conn, site("/chatty"), "chatty.*")
        for event_type in ("old.a", "limited.a", "chatty.a"):
            await enqueue(conn, event_type)
        for endpoint_id in (old, limited, chatty):
            await wait_attempts(conn, endpoint_id, 1)
        row = await endpoint_row(conn, old)
        assert row["enabled"] is False
        assert row["disabled_reason"].startswith("failing continuously since")
        pause = await conn.fetchval(
            "SELECT extract(epoch FROM paused_until - now())::float8"
            " FROM courier.endpoints WHERE id = $1",
            limited,
        )
        assert 3500 < pause <= 3600
        [attempt] = await attempts_at(conn, chatty)
        assert len(attempt["response_body"]) == 4096

        # ADMIN_OPEN_OPERATIONS defaults to true: /metrics without a token. A NOTIFY wakes an
        # idle relay, and pgcourier_wakeups_total{source="notify"} counts it.
        async def idle() -> bool:
            return bool(await conn.fetchval("SELECT bool_and(idle) FROM courier.relays"))

        async def notify_wakeups() -> float:
            async with http.get(f"{relay.base_url}/metrics") as response:
                assert response.status == 200
                return metric(await response.text(), "pgcourier_wakeups_total", source="notify")

        # Request bodies up to 1 MiB, although twice the default payload limit is less.
        body = json.dumps({"event_type": "pad.ded", "payload": {}}).encode()
        async with http.post(
            f"{relay.base_url}/api/v1/events",
            data=io.BytesIO(body + b" " * (1024 * 1024 - len(body))),
            headers=JSON_BODY,
        ) as response:
            assert response.status == 201, await response.text()

        await wait_until(idle)
        before = await notify_wakeups()
        ok = await endpoint(conn, site("/ok"), "ok.*")
        await enqueue(conn, "ok.a")
        await wait_attempts(conn, ok, 1)

        async def woken_by_notify() -> bool:
            # Polled: the relay counts the wake-up when it next sleeps, which may come just
            # after the delivery it woke for is written.
            return await notify_wakeups() >= before + 1

        await wait_until(woken_by_notify, timeout=5)

    # LOG_FORMAT defaults to auto: stderr is a pipe, not a terminal, so every line is JSON.
    assert relay.lines
    assert all(isinstance(record, dict) for record in relay.records())
    assert any(record.get("event") == "relay started" for record in relay.records())


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_admin_disabled_relay_still_delivers_and_logs_for_a_console(
    conn: asyncpg.Connection, dsn: str, site: Callable[[str], str]
) -> None:
    ok = await endpoint(conn, site("/ok"), "ok.*")
    await enqueue(conn, "ok.a")
    with socket.socket() as probe:  # a port nobody listens on, to see that it stays closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with pgcourier_run(
        dsn,
        ready="relay started",
        PGCOURIER_ADMIN_ENABLED="false",
        PGCOURIER_ADMIN_PORT=str(port),
        PGCOURIER_LOG_FORMAT="console",
    ) as relay:
        await wait_until(
            lambda: conn.fetchval(
                "SELECT status = 'delivered' FROM courier.deliveries WHERE endpoint_id = $1", ok
            )
        )
        assert not await listening(port)
    assert "admin server listening" not in relay.stderr
    # LOG_FORMAT=console: human lines, not JSON.
    started = next(line for line in relay.lines if "relay started" in line)
    with pytest.raises(json.JSONDecodeError):
        json.loads(started)
    assert "delivery attempt" in relay.stderr
