"""One tenant's dead letters and events beside a million other rows, whatever the statistics
say (issue 13's tenant filters under issue 10's rule).

In the style of test_plans: two databases built once per run (``stale`` statistics taken over a
small snapshot, ``missing`` statistics never taken), each statement planned with custom and
generic plans through ``PREPARE``. The data: 1M events (most of tenant ``big``, a tenth without
a tenant, the 200 oldest of tenant ``acme``) and 500,000 dead letters, acme's the oldest, so a
plan that walks every dead letter newest first and filters on the tenant reads them all before
it finds acme's.

Cost estimates cannot tell such a walk from a good one (the LIMIT makes both look cheap), so
each statement is run (``EXPLAIN (ANALYZE, BUFFERS)``, in a transaction rolled back) and the
pages it touched are counted: a tenant's page must cost about its own rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgcourier import db
from tests.integration.test_plans import (
    ENDPOINTS,
    JIT_ABOVE_COST,
    MODES,
    STATES,
    _literal,
    _run,
    _walk,
    body_statements,
    databases_by_state,
)

pytestmark = pytest.mark.timeout(900)
EVENTS = 1_000_000
TABLES = ("outbox", "dead_letters", "endpoints")
# Pages a statement may touch: a page of 101 rows, each with a few index pages and a probe or
# two, or acme's 200 dead letters, come to one or two thousand; a walk of the others' rows (or,
# for big's page, a sort of all big's rows) to tens of thousands or millions.
MAX_BUFFERS = 5_000

# $1 events, the first $2 of tenant acme (the oldest), every tenth of the others without a
# tenant, the rest of tenant big.
EVENTS_SQL = """
INSERT INTO courier.outbox (event_type, payload, tenant, created_at, fanned_out_at)
SELECT CASE WHEN g % 3 = 0 THEN 'user.created' ELSE 'order.failed' END, '{"order": 1}',
       CASE WHEN g <= $2 THEN 'acme' WHEN g % 10 = 0 THEN NULL ELSE 'big' END,
       now() - interval '30 days' + g * interval '2 ms',
       now() - interval '30 days' + g * interval '2 ms'
FROM generate_series(1, $1::int) AS g;
"""
# A dead letter for every acme event and every other event besides, dead in event order.
# Written as the relay writes them, with the dead letters' triggers (0013 fills the tenant).
DEAD_SQL = """
INSERT INTO courier.dead_letters (event_id, endpoint_id, attempts, last_attempt_at,
                                  last_status_code, last_error, dead_at)
SELECT o.id, ep.ids[1 + o.seq % 6], 5, o.created_at, 500, 'HTTP 500',
       o.created_at + interval '1 hour'
FROM courier.outbox AS o,
     (SELECT array_agg(id ORDER BY url) AS ids FROM courier.endpoints WHERE enabled) AS ep
WHERE o.tenant = 'acme' OR o.seq % 2 = 0;
"""


async def _load(conn: asyncpg.Connection, state: str) -> None:
    for table in TABLES:
        await conn.execute(f"ALTER TABLE courier.{table} SET (autovacuum_enabled = false)")
    await conn.execute("SET session_replication_role = replica")
    await _run(conn, ENDPOINTS)
    if state == "stale":
        await _run(conn, EVENTS_SQL, 300, 20)
        await conn.execute("SET session_replication_role = origin")
        await _run(conn, DEAD_SQL)
        await conn.execute("ANALYZE")
        await conn.execute("DELETE FROM courier.dead_letters")
        await conn.execute("DELETE FROM courier.outbox")
        await conn.execute("SET session_replication_role = replica")
    # The events as a bulk load would write them (without the outbox's triggers); the dead
    # letters with their own.
    await _run(conn, EVENTS_SQL, EVENTS, 200)
    await conn.execute("SET session_replication_role = origin")
    await _run(conn, DEAD_SQL)


@pytest.fixture(scope="module")
def big(server_dsn: str) -> Iterator[dict[str, str]]:
    with databases_by_state(server_dsn, "pgcourier_tenant_plans", STATES, _load) as dsns:
        yield dsns


def _buffers(node: dict[str, Any]) -> int:
    return int(node.get("Shared Hit Blocks", 0)) + int(node.get("Shared Read Blocks", 0))


async def _measure(
    conn: asyncpg.Connection, sql: str, args: list[Any], types: list[str] | None = None
) -> tuple[float, int, list[str], str]:
    """Cost, pages touched, big tables scanned sequentially, and the plan as text, of ``sql``
    run once with ``args`` (rolled back) under the session's plan_cache_mode."""
    declared = f"({', '.join(types)})" if types else ""
    call = f"({', '.join(_literal(a) for a in args)})" if args else ""
    await conn.execute(f"PREPARE hot{declared} AS {sql}")
    try:
        async with conn.transaction():
            [plan] = json.loads(
                await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE hot{call}")
            )
            text = "\n".join(
                r[0] for r in await conn.fetch(f"EXPLAIN (COSTS OFF) EXECUTE hot{call}")
            )
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.execute("DEALLOCATE hot")
    root = plan["Plan"]
    scans = [
        n["Relation Name"]
        for n in _walk(root)
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in ("outbox", "dead_letters")
    ]
    return float(root["Total Cost"]), _buffers(root), scans, text


class _Rollback(Exception):
    pass


NOW = datetime.now(UTC)
# What the dead-letter and event operations run for a tenant filter, with no other filter and
# with every other filter (ops.dead_letters, ops.console, ops.events): for acme, whose rows are
# the oldest, and for big, which holds most rows. The listings are pages (LIMIT); matching ids
# and counts read all the tenant's rows (the cost estimate is then the tenant's size as the
# statistics guess it, so only their pages touched are held to a bound: the admin pool runs
# with jit = off).
PAGED = ("list_tenant_dead", "list_tenant_events")
STATEMENTS: dict[str, tuple[str, list[Any]]] = {
    "dead letters: a tenant's page": (
        "list_tenant_dead",
        [None, None, None, None, None, None, 101, "acme"],
    ),
    "dead letters: the biggest tenant's page": (
        "list_tenant_dead",
        [None, None, None, None, None, None, 101, "big"],
    ),
    "dead letters: a tenant's page, filtered, after a cursor": (
        "list_tenant_dead",
        [None, "order.failed", NOW - timedelta(days=60), NOW, NOW, 2**62, 101, "acme"],
    ),
    "dead letters: a tenant's matching ids (bulk replay)": (
        "matching_tenant_dead_ids",
        [None, None, None, None, "acme"],
    ),
    "dead letters: a tenant's count (console)": (
        "console_count_tenant_dead",
        [None, "order.failed", None, None, "acme"],
    ),
    "events: a tenant's page": (
        "list_tenant_events",
        [None, None, None, None, None, 101, "acme"],
    ),
    "events: the biggest tenant's page": (
        "list_tenant_events",
        [None, None, None, None, None, 101, "big"],
    ),
    "events: a tenant's page, filtered": (
        "list_tenant_events",
        ["order.failed", NOW - timedelta(days=60), NOW, NOW, None, 101, "acme"],
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("statement", list(STATEMENTS))
async def test_a_tenants_rows_cost_its_own_rows(
    big: dict[str, str], state: str, mode: str, statement: str
) -> None:
    name, args = STATEMENTS[statement]
    conn = await asyncpg.connect(big[state])
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        cost, buffers, scans, text = await _measure(conn, db.QUERIES[name], args)
    finally:
        await conn.close()
    report = os.environ.get("PGCOURIER_PLAN_REPORT")
    if report:
        with Path(report).open("a") as out:  # noqa: ASYNC230 - a few short lines
            out.write(f"## {statement} [{state}, {mode}]: {buffers} buffers\n{text}\n\n")
    assert scans == [], f"seq scan of {scans}:\n{text}"
    if name in PAGED:
        assert cost < JIT_ABOVE_COST, f"cost {cost:.0f}:\n{text}"
    assert buffers < MAX_BUFFERS, f"{buffers} pages touched:\n{text}"


async def test_the_dead_letter_tenant_fill_is_a_primary_key_probe(big: dict[str, str]) -> None:
    """The trigger that gives a new dead letter its event's tenant (0013) reads one outbox row."""
    conn = await asyncpg.connect(big["missing"])
    try:
        source = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE oid = 'courier.dead_letter_tenant()'::regprocedure"
        )
        # (PL/pgSQL prepares it with NEW.event_id as its parameter and INTO as a target.)
        statement = body_statements(source.replace("INTO NEW.tenant", ""), ["NEW.event_id"])[0]
        event = await conn.fetchval("SELECT id FROM courier.outbox WHERE tenant = 'acme' LIMIT 1")
        for mode in MODES:
            await conn.execute(f"SET plan_cache_mode = {mode}")
            cost, buffers, scans, text = await _measure(conn, statement, [event], ["uuid"])
            assert scans == [], text
            assert buffers < 10, text
            assert cost < JIT_ABOVE_COST, text
    finally:
        await conn.close()


async def test_the_data_is_as_described(big: dict[str, str]) -> None:
    for dsn in big.values():
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == EVENTS
            assert await conn.fetchval("SELECT count(*) FROM courier.dead_letters") == 500_100
            acme = await conn.fetchval(
                "SELECT count(*) FROM courier.dead_letters AS d JOIN courier.outbox AS o"
                " ON o.id = d.event_id WHERE o.tenant = 'acme'"
            )
            assert acme == 200
        finally:
            await conn.close()
