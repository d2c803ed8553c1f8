"""What strict event types (PGCOURIER_EVENT_TYPES=strict) cost a producer: single-row inserts
into courier.outbox with the strict trigger and without, on the embedded Postgres.

    python scripts/strict_insert_cost.py [--rows 3000] [--rounds 4] [--dsn DSN]

Each round runs the same inserts in open mode then in strict mode (alternating, so drift in the
machine's load hits both), twice: one commit per insert (what a producer pays) and all inserts
in one transaction (the statement alone, without the commit that dominates the first figure).
Prints the median per-insert time of each and the difference. Uses a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from pgcourier import db, ops
from pgcourier.embedded import EmbeddedPostgres

INSERT = "INSERT INTO courier.outbox (event_type, payload) VALUES ($1, $2::jsonb)"
PAYLOAD = '{"order_id": 42, "amount": 9.5, "currency": "EUR"}'


async def _insert_rows(conn: asyncpg.Connection, rows: int, *, one_transaction: bool) -> float:
    statement = await conn.prepare(INSERT)
    started = time.perf_counter()
    if one_transaction:
        async with conn.transaction():
            for _ in range(rows):
                await statement.fetch("order.paid", PAYLOAD)
    else:
        for _ in range(rows):
            await statement.fetch("order.paid", PAYLOAD)
    return (time.perf_counter() - started) / rows * 1e6  # microseconds per insert


async def measure(dsn: str, rows: int, rounds: int) -> None:
    admin = await asyncpg.connect(dsn)
    name = f"strict_cost_{int(time.time())}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(dsn, database=name)
        try:
            await db.migrate(conn)
            await ops.create_event_type(conn, "order.paid")
            results: dict[tuple[str, bool], list[float]] = {}
            for _ in range(rounds):
                for mode in ("open", "strict"):
                    await ops.apply_event_types_mode(conn, mode)
                    for one_tx in (False, True):
                        cost = await _insert_rows(conn, rows, one_transaction=one_tx)
                        results.setdefault((mode, one_tx), []).append(cost)
                await conn.execute("TRUNCATE courier.outbox CASCADE")
            triggers = await _trigger_times(conn, rows)
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    version = await _server_version(dsn)
    print(f"Postgres {version}; {rows} single-row inserts x {rounds} rounds per mode")
    for one_tx, label in ((False, "one commit per insert"), (True, "all in one transaction")):
        open_us = statistics.median(results[("open", one_tx)])
        strict_us = statistics.median(results[("strict", one_tx)])
        print(
            f"  {label:24} open {open_us:7.1f} us   strict {strict_us:7.1f} us   "
            f"difference {strict_us - open_us:+6.1f} us ({(strict_us / open_us - 1) * 100:+.1f}%)"
        )
    print("  per-row time inside each BEFORE trigger (EXPLAIN ANALYZE, server side, strict mode):")
    for name, per_row in triggers.items():
        print(f"    {name:34} {per_row:6.2f} us")


async def _trigger_times(conn: asyncpg.Connection, rows: int) -> dict[str, float]:
    """Server-side time per row in each trigger, from EXPLAIN ANALYZE of one multi-row INSERT
    (rolled back): far less sensitive to a busy machine than a client's wall clock, and the
    trigger's own cost without the round trips and commits around it."""
    await ops.apply_event_types_mode(conn, "strict")
    transaction = conn.transaction()
    await transaction.start()
    try:
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO courier.outbox (event_type, payload) "
            f"SELECT 'order.paid', '{PAYLOAD}'::jsonb FROM generate_series(1, {rows})"
        )
    finally:
        await transaction.rollback()
    found = json.loads(plan)[0].get("Triggers", [])
    return {t["Trigger Name"]: t["Time"] * 1000 / t["Calls"] for t in found}


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dsn", help="a Postgres to use (default: an embedded one, scratch dir)")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(measure(args.dsn, args.rows, args.rounds))
        return
    with tempfile.TemporaryDirectory() as home:
        embedded = EmbeddedPostgres(Path(home))
        dsn = embedded.start()
        try:
            asyncio.run(measure(dsn, args.rows, args.rounds))
        finally:
            embedded.stop()


if __name__ == "__main__":
    main()
