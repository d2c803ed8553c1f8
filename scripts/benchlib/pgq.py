"""PgQueuer's side in the benchmark process: its schema, its enqueue, its completion check.

The producers use the very statement ``Queries.enqueue`` sends (built by PgQueuer's own query
builder), with the values written in, so that pgbench and a one-round-trip
``BEGIN; ...; COMMIT`` can send it; the bulk loads use ``Queries.enqueue`` itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import asyncpg
from pgqueuer.adapters.persistence import qb
from pgqueuer.queries import Queries

from benchlib.pgq_consumer import ENTRYPOINT
from benchlib.procs import check_all

NAMES = qb.QueryQueueBuilder().qualified


def envelope(event_type: str, data: str) -> bytes:
    """The body pgcourier would send for this event (see pgcourier.model): the same bytes for
    both queues, so that the receiver and the wire see the same work."""
    return (
        f'{{"id":"{uuid.uuid4()}","type":{json.dumps(event_type)},'
        f'"timestamp":"2026-11-25T12:00:00.000000Z","data":{data}}}'
    ).encode()


def enqueue_statement(body: bytes) -> str:
    """PgQueuer's single-job enqueue, its parameters written in as literals."""
    literals = {
        "1": "ARRAY[0]",
        "2": f"ARRAY['{ENTRYPOINT}']",
        "3": f"ARRAY['\\x{body.hex()}'::bytea]",
        "4": "ARRAY['0 seconds'::interval]",  # what Queries.enqueue sends for none
        "5": "ARRAY[NULL::text]",
        "6": "ARRAY['null'::jsonb]",  # to_json(None), as Queries.enqueue sends
    }
    sql = qb.QueryQueueBuilder().build_enqueue_query("raise")
    return re.sub(r"\$(\d)\b", lambda m: literals[m.group(1)], sql).strip()


async def install(conn: asyncpg.Connection) -> None:
    await Queries.from_asyncpg_connection(conn).install()


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute(
        f"TRUNCATE {NAMES.queue_table}, {NAMES.queue_table_log}, {NAMES.statistics_table}"
    )
    await conn.execute(f"VACUUM ANALYZE {NAMES.queue_table}, {NAMES.queue_table_log}")


async def enqueue_many(conn: asyncpg.Connection, n: int) -> None:
    """n jobs in one statement (one transaction), as pgcourier's side commits its events."""
    bodies: list[bytes | None] = [
        envelope("bench.drain", json.dumps({"i": i, "pad": "x" * 64})) for i in range(1, n + 1)
    ]
    await Queries.from_asyncpg_connection(conn).enqueue([ENTRYPOINT] * n, bodies, [0] * n)


async def wait_done(conn: asyncpg.Connection, timeout: float) -> float:
    """Until no job is left in the queue table (PgQueuer deletes a job when it logs it done)."""
    deadline = time.monotonic() + timeout
    while await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {NAMES.queue_table})"):
        check_all()
        if time.monotonic() > deadline:
            raise TimeoutError("PgQueuer's jobs were not all completed in time")
        await asyncio.sleep(0.02)
    return time.time()


async def failed(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval(
        f"SELECT count(*) FROM {NAMES.queue_table_log} WHERE status IN ('exception', 'failed')"
    )
    return n


def latency_statement(t: float) -> str:
    return f"BEGIN; {enqueue_statement(envelope('bench.latency', json.dumps({'t': t})))}; COMMIT"
