"""The relay rides out what a real Postgres does under load: a fast restart, a crash (immediate
stop) and start, refusing connections for 30 s, and every relay connection terminated at once.

Each case runs a real ``pgcourier run`` process against a server of the test's own
(:mod:`tests.integration.own_server`), with a drain in progress and producers committing
throughout. After each fault: the relay process is still running, it is ready again (pool and
LISTEN connection) within 5 s of the server accepting connections, every committed event reaches
both endpoints (duplicates only with the same webhook-id), an idle relay is woken by NOTIFY again
rather than by its poll, every line it wrote is JSON, and SIGTERM still stops it with status 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgcourier import db, ops
from tests.integration.helpers import Receiver, wait_until
from tests.integration.own_server import OwnServer
from tests.integration.test_cli import cli_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

PRELOADED = 3000
POLL_INTERVAL = 5.0  # long, so that a wake-up by NOTIFY is told apart from one by the poll


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    with OwnServer() as server:
        yield server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Producers:
    """Commits single-event transactions in a loop, reconnecting through outages. Only events
    whose COMMIT was acknowledged are counted; the database is the judge of the rest."""

    def __init__(self, dsn: str, writers: int = 4) -> None:
        self._dsn = dsn
        self._writers = writers
        self.committed: set[str] = set()
        self.failures = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(i)) for i in range(self._writers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, i: int) -> None:
        conn: asyncpg.Connection | None = None
        n = 0
        while not self._stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncio.wait_for(asyncpg.connect(self._dsn), 2)
                assert conn is not None
                event_id = await asyncio.wait_for(
                    conn.fetchval(
                        "SELECT courier.enqueue('order.paid', $1::jsonb)",
                        json.dumps({"writer": i, "n": n}),
                    ),
                    2,
                )
                self.committed.add(str(event_id))
                n += 1
                await asyncio.sleep(0.01)
            # Anything: asyncpg also raises InternalClientError on a connection a timeout broke.
            except Exception:
                self.failures += 1
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None:
            await conn.close()


@asynccontextmanager
async def relay_process(dsn: str, admin_port: int) -> AsyncIterator[tuple[Any, list[bytes]]]:
    env = cli_env(
        dsn,
        PGCOURIER_ADMIN_PORT=str(admin_port),
        PGCOURIER_POLL_INTERVAL=f"{POLL_INTERVAL}s",
        PGCOURIER_RETRY_SCHEDULE="200ms,500ms,1s,1s,1s,1s,1s,1s",
        PGCOURIER_DELIVERY_TIMEOUT="2s",
        PGCOURIER_LEASE="10s",
        PGCOURIER_SHUTDOWN_TIMEOUT="5s",
        PGCOURIER_CIRCUIT_FAILURES="1000",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[bytes] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            lines.append(line)

    reader = asyncio.create_task(read())
    try:
        yield proc, lines
    except BaseException:
        print("relay stderr (last 40 lines):", *[ln.decode(errors="replace") for ln in lines[-40:]])
        raise
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader


async def ready_status(http: aiohttp.ClientSession, admin_port: int) -> int | None:
    """/ready's status code; None when the admin server does not answer."""
    try:
        async with http.get(
            f"http://127.0.0.1:{admin_port}/ready", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def notify_wakeups(http: aiohttp.ClientSession, admin_port: int) -> float:
    """How many times the relay process was woken by NOTIFY (its /metrics)."""
    async with http.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pgcourier_wakeups_total" and sample.labels == {"source": "notify"}:
                return sample.value
    return 0.0


async def ready(http: aiohttp.ClientSession, admin_port: int) -> bool:
    return await ready_status(http, admin_port) == 200


async def seconds_until_ready(http: aiohttp.ClientSession, admin_port: int) -> float:
    started = time.monotonic()
    while not await ready(http, admin_port):
        if time.monotonic() - started > 30:
            raise AssertionError("the relay did not become ready within 30 s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _restart_fast(server: OwnServer) -> Callable[[], Any]:
    async def fault() -> None:
        await asyncio.to_thread(server.restart, "fast")

    return fault


def _crash(server: OwnServer) -> Callable[[], Any]:
    async def fault() -> None:
        await asyncio.to_thread(server.stop, "immediate")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)

    return fault


def _refuse_30s(server: OwnServer, probe: Callable[[], Awaitable[int | None]]) -> Any:
    async def fault() -> None:
        await asyncio.to_thread(server.stop, "fast")
        # /ready reports the outage while it lasts: 503 every time it is asked.
        answers: list[int | None] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 30
        while loop.time() < until:
            answers.append(await probe())
            await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        assert len(answers) >= 20
        assert set(answers) == {503}, f"/ready during the outage answered {set(answers)}"

    return fault


def _terminate_relay_backends(server: OwnServer, spare: Callable[[], set[int]]) -> Any:
    async def fault() -> None:
        admin = await asyncpg.connect(server.dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND NOT (pid = ANY($1::int[]))",
                list(spare()),
            )
        finally:
            await admin.close()
        assert killed >= 2  # the pool and the LISTEN connection at least

    return fault


FAULTS = ["restart_fast", "crash_and_start", "refuse_connections_30s", "terminate_backends"]


@pytest.mark.parametrize("fault_name", FAULTS)
async def test_relay_survives_database_faults_under_load(
    own_server: OwnServer, receiver: Receiver, fault_name: str
) -> None:
    dsn = own_server.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        first = await ops.create_endpoint(conn, url=receiver.url("/a"), event_types=["*"])
        second = await ops.create_endpoint(conn, url=receiver.url("/b"), event_types=["order.*"])
        assert first["id"] != second["id"]
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload) "
            "SELECT 'order.paid', jsonb_build_object('preloaded', i) "
            "FROM generate_series(1, $1) AS i",
            PRELOADED,
        )
    finally:
        await conn.close()

    producers = Producers(dsn)
    spare: set[int] = set()
    fault = {
        "restart_fast": _restart_fast(own_server),
        "crash_and_start": _crash(own_server),
        "refuse_connections_30s": _refuse_30s(own_server, lambda: ready_status(http, admin_port)),
        "terminate_backends": _terminate_relay_backends(own_server, lambda: spare),
    }[fault_name]

    admin_port = _free_port()
    async with (
        aiohttp.ClientSession() as http,
        relay_process(dsn, admin_port) as (proc, lines),
    ):
        await wait_until(lambda: ready(http, admin_port), timeout=30)
        producers.start()
        # A drain is in progress: some delivered, most not yet.
        await receiver.wait_count(300, timeout=30)
        assert len(receiver.requests) < 2 * PRELOADED
        await fault()
        back = await seconds_until_ready(http, admin_port)
        print(f"{fault_name}: ready {back:.2f} s after the server accepted connections")
        assert proc.returncode is None, "the relay exited on a database fault"
        assert back <= 5.0, f"ready again only {back:.1f}s after the server accepted connections"

        await asyncio.sleep(1.0)  # producers keep committing after the fault too
        await producers.stop()
        check = await asyncpg.connect(dsn)
        try:
            expected = {str(r["id"]) for r in await check.fetch("SELECT id FROM courier.outbox")}
            assert producers.committed <= expected  # every acknowledged commit is there
            assert len(expected) >= PRELOADED + len(producers.committed)
            await receiver.wait_for(
                lambda: set(receiver.ids("/a")) >= expected and set(receiver.ids("/b")) >= expected,
                timeout=60,
            )
            await wait_until(
                lambda: check.fetchval(
                    "SELECT count(*) = 0 FROM courier.deliveries WHERE status <> 'delivered'"
                ),
                timeout=30,
            )
            assert await check.fetchval("SELECT count(*) FROM courier.deliveries") == 2 * len(
                expected
            )
            # Nothing was sent that was not committed (every webhook-id is a committed event).
            assert set(receiver.ids()) == expected

            # Idle again: a new event wakes the relay by NOTIFY, not by the 5 s poll.
            await asyncio.sleep(0.5)
            before = len(receiver.on("/a"))
            notified = await notify_wakeups(http, admin_port)
            sent = time.monotonic()
            await check.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
            await receiver.wait_count(before + 1, "/a", timeout=POLL_INTERVAL * 2)
            idle_latency = time.monotonic() - sent
            print(f"{fault_name}: idle commit -> receipt {idle_latency * 1000:.0f} ms")
            assert idle_latency < POLL_INTERVAL / 2
            # And it was NOTIFY that woke it: a poll could also land within that bound.
            assert await notify_wakeups(http, admin_port) > notified
        finally:
            await check.close()

        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0

    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, f"non-JSON lines on stderr: {not_json[:5]}"


async def test_a_relay_idle_through_a_crash_is_woken_by_notify_again(
    own_server: OwnServer, receiver: Receiver
) -> None:
    # The crash empties the UNLOGGED courier.relays. Idle at that moment, the relay is woken by
    # its listener reconnecting, finds nothing and marks itself idle: that write must put its
    # row back, or no producer notifies it (until a heartbeat re-registers it, and even then
    # only after its next poll).
    dsn = own_server.dsn
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        await ops.create_endpoint(conn, url=receiver.url("/a"), event_types=["*"])
    finally:
        await conn.close()
    admin_port = _free_port()
    async with (
        aiohttp.ClientSession() as http,
        relay_process(dsn, admin_port) as (proc, _lines),
    ):
        await wait_until(lambda: ready(http, admin_port), timeout=30)
        await _crash(own_server)()
        back = await seconds_until_ready(http, admin_port)
        assert back <= 5.0, f"ready again only {back:.1f}s after the server accepted connections"
        await asyncio.sleep(0.5)  # the wake-up of the reconnect has been handled
        check = await asyncpg.connect(dsn)
        try:
            notified = await notify_wakeups(http, admin_port)
            sent = time.monotonic()
            await check.execute("SELECT courier.enqueue('order.paid', '{}'::jsonb)")
            await receiver.wait_count(1, "/a", timeout=POLL_INTERVAL * 2)
            idle_latency = time.monotonic() - sent
            print(f"idle through a crash: commit -> receipt {idle_latency * 1000:.0f} ms")
            assert idle_latency < POLL_INTERVAL / 2
            assert await notify_wakeups(http, admin_port) > notified
        finally:
            await check.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
