"""``pgcourier run --processes N``: N relays under one parent, on one database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from pgcourier import ops
from tests.integration.helpers import Receiver, add_endpoint, statuses, wait_until
from tests.integration.test_cli import cli_env, pgcourier

SHUTDOWN_TIMEOUT = 10.0


@dataclass
class Parent:
    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)  # anything that is not one JSON object

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]


@contextlib.asynccontextmanager
async def run_processes(n: int, dsn: str | None, **extra: str) -> AsyncIterator[Parent]:
    """``pgcourier run --processes n``, its JSON log lines read as they come (a full stderr pipe
    would stall the relays)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "run",
        "--processes",
        str(n),
        env=cli_env(dsn, PGCOURIER_SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT}s", **extra),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    parent = Parent(proc)

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            try:
                parent.lines.append(json.loads(raw))
            except ValueError:
                parent.other.append(raw)

    reader = asyncio.create_task(read())
    try:
        yield parent
    finally:
        if proc.returncode is None:
            proc.kill()
            for line in parent.lines:  # children outlive a killed parent: end them too
                if line.get("event") == "relay process started":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(line["pid"], signal.SIGKILL)
        await proc.wait()
        await asyncio.wait_for(reader, 10)


async def stop(parent: Parent) -> float:
    """SIGTERM the parent; the seconds it took to exit."""
    started = time.monotonic()
    parent.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(parent.proc.wait(), SHUTDOWN_TIMEOUT + 30)
    return time.monotonic() - started


async def _relay_pids(conn: asyncpg.Connection) -> set[int]:
    return {r["pid"] for r in await conn.fetch("SELECT pid FROM courier.relays")}


async def test_two_processes_share_the_work_and_stop_cleanly(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    await ops.create_endpoint(conn, url=receiver.url("/hook"), event_types=["*"], max_in_flight=100)
    # More than a second of work for one relay (200 x 50 ms, 8 at a time: each relay's own cap,
    # below the endpoint's), and relays that poll every 200 ms: one relay cannot take it all, and
    # a relay that woke before the batch was fanned out, found nothing and slept, is back soon.
    receiver.delay["/hook"] = 0.05
    async with run_processes(
        2, dsn, PGCOURIER_POLL_INTERVAL="200ms", PGCOURIER_MAX_IN_FLIGHT="8"
    ) as parent:
        # Both relays registered (two processes, two pids) before the batch is committed, so
        # that both are there to claim it.
        await wait_until(lambda: _count_pids(conn, 2), timeout=30)
        async with conn.transaction():
            ids = {str(await ops.enqueue(conn, "order.paid", {"i": i})) for i in range(200)}
        await wait_until(lambda: _all_delivered(conn), timeout=60)
        took = await stop(parent)
    assert parent.proc.returncode == 0
    assert took < SHUTDOWN_TIMEOUT
    # Exactly once each: every event's webhook-id reached the receiver one time.
    assert receiver.ids() == dict.fromkeys(ids, 1)
    # Both children claimed and delivered, and every line a child logs names its process.
    assert parent.other == []
    attempts = parent.logged("delivery attempt")
    assert len(attempts) == 200
    assert {line["process"] for line in attempts} == {0, 1}
    assert all("process" in line for line in parent.logged("relay started"))
    # One admin server, on child 0; both relays deregistered on the way out.
    [admin] = parent.logged("admin server listening")
    assert admin["process"] == 0
    assert await conn.fetchval("SELECT count(*) FROM courier.relays") == 0


async def _all_delivered(conn: asyncpg.Connection) -> bool:
    return await statuses(conn) == {"delivered": 200}


async def test_a_child_that_dies_is_restarted(
    conn: asyncpg.Connection, dsn: str, receiver: Receiver
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    async with run_processes(2, dsn) as parent:
        await wait_until(lambda: _count_pids(conn, 2), timeout=30)
        first = await _relay_pids(conn)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # A new relay process registers (the dead one's row stays until it is reaped).
        await wait_until(lambda: _has_new_pid(conn, first), timeout=30)
        event_id = str(await ops.enqueue(conn, "order.paid", {}))
        await receiver.wait_count(1, timeout=20)
        took = await stop(parent)
    assert parent.proc.returncode == 0
    assert took < SHUTDOWN_TIMEOUT
    assert receiver.ids() == {event_id: 1}
    [restart] = parent.logged("relay process exited unexpectedly; restarting it")
    assert restart["exit_code"] == -signal.SIGKILL
    assert len(parent.logged("relay process started")) == 3


async def _count_pids(conn: asyncpg.Connection, n: int) -> bool:
    return len(await _relay_pids(conn)) == n


async def _has_new_pid(conn: asyncpg.Connection, old: set[int]) -> bool:
    return bool(await _relay_pids(conn) - old)


async def test_children_share_the_embedded_database(tmp_path: Path) -> None:
    data = {"PGCOURIER_DATA_DIR": str(tmp_path / "data")}
    async with run_processes(2, None, **data) as parent:
        await wait_until(lambda: len(parent.logged("relay started")) == 2, timeout=60)
        # Another command on the same data directory joins the same server.
        code, out, err = await pgcourier("dsn", dsn=None, **data)
        assert code == 0, err
        other = await asyncpg.connect(out.strip())
        try:
            assert await other.fetchval("SELECT count(*) FROM courier.relays") == 2
        finally:
            await other.close()
        took = await stop(parent)
    assert parent.proc.returncode == 0
    assert took < SHUTDOWN_TIMEOUT
    assert len(parent.logged("embedded Postgres ready")) == 1  # the parent's, not per child


async def test_a_bad_process_count_is_one_line(dsn: str) -> None:
    for bad in ("0", "-1", "two", "65"):
        code, out, err = await pgcourier("run", "--processes", bad, dsn=dsn)
        assert code == 2
        assert out == ""
        [line] = err.splitlines()
        assert f"{bad!r} is not a number from 1 to 64" in line
