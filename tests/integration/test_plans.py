"""The hot statements' plans beside a million finished deliveries, whatever the statistics say
(issue 10: 1 and 2).

Two databases are built once per run, the way users get them (no catalog edits): migrated, then
1M finished events with their history and attempts loaded beside a few hundred open deliveries,
2,000 dead letters and 50 events still to fan out. Autovacuum is switched off for their tables,
as on a server that runs without it, so the statistics stay as built:

* ``stale``: statistics taken while the database held only a small snapshot of pending work
  (the migration's own ANALYZE of the empty tables, then one of the snapshot), the history
  loaded after;
* ``missing``: never analyzed (the migrations applied without their ANALYZE statements).

Each statement is planned as the relay's long-lived sessions may plan it, with custom plans and
with generic ones (``plan_cache_mode``), through ``PREPARE`` and ``EXPLAIN EXECUTE``. The
statements inside ``courier.claim`` and the producer's trigger functions are read from the
functions' source and prepared with their variables as parameters, which is what PL/pgSQL
does with them (``EXPLAIN`` of the function call shows nothing inside it, and auto_explain is
not on every server). No plan may scan the outbox, the history or the attempts sequentially,
and none may cost as much as ``jit_above_cost``'s default (100,000): that is where a server
with JIT compiles a statement on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pgcourier import db

# Fills a freshly migrated database for one statistics state.
Load = Callable[[asyncpg.Connection, str], Awaitable[None]]

HISTORY = 1_000_000
# Building both databases takes one to two minutes on a loaded 2-core machine (three 1M-row
# tables with their indexes, twice); the first test waits for it.
pytestmark = pytest.mark.timeout(900)
BIG_TABLES = {"outbox", "delivery_history", "attempts"}
JIT_ABOVE_COST = 100_000.0
STATES = ("stale", "missing")
MODES = ("force_custom_plan", "force_generic_plan")
LEASE_HOLDER = uuid.UUID("00000000-0000-4000-8000-00000000000a")
TABLES = ("outbox", "queue", "dead_letters", "delivery_history", "attempts", "endpoints", "relays")


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _without_analyze(migration: db.Migration) -> db.Migration:
    return dataclasses.replace(migration, sql=re.sub(r"(?m)^ANALYZE [^;]*;", "", migration.sql))


# Eight endpoints: six enabled (one rate-limited), one disabled, one deleted.
ENDPOINTS = """
INSERT INTO courier.endpoints (url, event_types, secret, enabled, rate_limit, created_at)
SELECT 'https://r.example/' || n, ARRAY[CASE WHEN n % 2 = 0 THEN 'order.*' ELSE '*' END],
       'whsec_' || repeat('A', 32), n <= 7, CASE WHEN n = 1 THEN 500 END,
       now() - interval '60 days'
FROM generate_series(1, 8) AS n;
UPDATE courier.endpoints SET deleted_at = now() - interval '5 minutes', enabled = false
WHERE url = 'https://r.example/8';
UPDATE courier.endpoints SET enabled = false WHERE url = 'https://r.example/7';
"""

# $1 events fanned out long ago, each with a finished delivery and an attempt.
HISTORY_SQL = """
INSERT INTO courier.outbox (event_type, payload, created_at, fanned_out_at)
SELECT CASE WHEN g % 3 = 0 THEN 'user.created' ELSE 'order.paid' END,
       '{"order": 1, "total": "12.50"}', now() - interval '30 days' + g * interval '2 ms',
       now() - interval '30 days' + g * interval '2 ms'
FROM generate_series(1, $1::int) AS g;
"""
HISTORY_ROWS = """
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, status, attempts, next_attempt_at, last_attempt_at,
     last_status_code, delivered_at, discarded_at, created_at)
SELECT nextval('courier.delivery_ids'), o.id, ep.ids[1 + o.seq % 6],
       CASE WHEN o.seq % 400 = 0 THEN 'discarded' ELSE 'delivered' END, 1, o.created_at,
       o.created_at, 200, o.created_at, CASE WHEN o.seq % 400 = 0 THEN o.created_at END,
       o.created_at
FROM courier.outbox AS o,
     (SELECT array_agg(id ORDER BY url) AS ids FROM courier.endpoints WHERE enabled) AS ep
WHERE o.fanned_out_at IS NOT NULL;
INSERT INTO courier.attempts
    (delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, status_code, outcome)
SELECT h.id, h.event_id, h.endpoint_id, 1, h.created_at, 12.5, 200, 'delivered'
FROM courier.delivery_history AS h;
"""

# Open work: $1 queued deliveries (a third due, a third leased to LEASE_HOLDER, a third waiting
# for a retry; every fifth keyed), $2 dead letters, $3 events not fanned out yet.
OPEN_WORK = """
WITH ev AS (
    INSERT INTO courier.outbox (event_type, payload, ordering_key, fanned_out_at)
    SELECT 'order.paid', jsonb_build_object('q', g),
           CASE WHEN g % 5 = 0 THEN 'key-' || g % 7 END, now()
    FROM generate_series(1, $1::int) AS g
    RETURNING id, seq, ordering_key
), ep AS (
    SELECT array_agg(id ORDER BY url) AS ids FROM courier.endpoints WHERE enabled
)
INSERT INTO courier.queue (event_id, endpoint_id, ordering_key, attempts, due_at, lease_token,
                           last_attempt_at)
SELECT ev.id, ep.ids[1 + ev.seq % 6], ev.ordering_key, CASE WHEN ev.seq % 3 = 2 THEN 1 ELSE 0 END,
       CASE ev.seq % 3 WHEN 0 THEN now() - interval '1 minute'
                       WHEN 1 THEN now() + interval '10 minutes'
                       ELSE now() + interval '5 minutes' END,
       CASE WHEN ev.seq % 3 = 1 THEN $4::uuid END,
       CASE WHEN ev.seq % 3 = 2 THEN now() - interval '1 minute' END
FROM ev, ep
ORDER BY ev.seq;
WITH ev AS (
    INSERT INTO courier.outbox (event_type, payload, fanned_out_at)
    SELECT 'order.failed', jsonb_build_object('d', g), now()
    FROM generate_series(1, $2::int) AS g
    RETURNING id, seq
), ep AS (
    SELECT array_agg(id ORDER BY url) AS ids FROM courier.endpoints WHERE enabled
)
INSERT INTO courier.dead_letters (event_id, endpoint_id, attempts, last_attempt_at,
                                  last_status_code, last_error, dead_at)
SELECT ev.id, ep.ids[1 + ev.seq % 6], 5, now(), 500, 'HTTP 500',
       now() - ev.seq % 1000 * interval '1 minute'
FROM ev, ep;
INSERT INTO courier.outbox (event_type, payload, ordering_key)
SELECT 'order.paid', jsonb_build_object('f', g), CASE WHEN g % 4 = 0 THEN 'key-1' END
FROM generate_series(1, $3::int) AS g;
INSERT INTO courier.relays (id, hostname, pid, idle) VALUES (gen_random_uuid(), 'h', 1, true);
"""


async def _run(conn: asyncpg.Connection, script: str, *args: Any) -> None:
    for statement in (s for s in script.split(";") if s.strip()):
        used = sorted({int(n) for n in re.findall(r"\$(\d)", statement)})
        # Numbered afresh: a statement of the script uses some of its arguments only.
        numbered = statement
        for new, old in enumerate(used, start=1):
            numbered = re.sub(rf"\${old}\b", f"${new}", numbered)
        await conn.execute(numbered, *(args[n - 1] for n in used))


async def _migrated(server_dsn: str, name: str, state: str, load: Load) -> None:
    """Database ``name`` created afresh, migrated (without the migrations' ANALYZE statements
    when ``state`` is ``missing``), then handed to ``load``."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(_with_database(server_dsn, name))
    try:
        with pytest.MonkeyPatch.context() as mp:
            if state == "missing":
                mp.setattr(db, "MIGRATIONS", [_without_analyze(m) for m in db.MIGRATIONS])
            await db.migrate(conn)
        await load(conn, state)
    finally:
        await conn.close()


@contextlib.contextmanager
def databases_by_state(
    server_dsn: str, prefix: str, states: Sequence[str], load: Load
) -> Iterator[dict[str, str]]:
    """One database per statistics state, built at once (see _migrated), dropped at the end."""
    names = {state: f"{prefix}_{state}_{os.getpid()}" for state in states}

    async def build_all() -> None:
        await asyncio.gather(*(_migrated(server_dsn, n, s, load) for s, n in names.items()))

    async def drop_all() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            for name in names.values():
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

    try:
        asyncio.run(build_all())
        yield {state: _with_database(server_dsn, name) for state, name in names.items()}
    finally:
        asyncio.run(drop_all())


async def _load(conn: asyncpg.Connection, state: str) -> None:
    for table in TABLES:
        await conn.execute(f"ALTER TABLE courier.{table} SET (autovacuum_enabled = false)")
    # Loaded as a bulk load would be: without the outbox's per-row triggers.
    await conn.execute("SET session_replication_role = replica")
    await _run(conn, ENDPOINTS)
    if state == "stale":
        # A snapshot of a quiet moment, analyzed, then gone.
        await _run(conn, HISTORY_SQL, 300)
        await _run(conn, HISTORY_ROWS)
        await _run(conn, OPEN_WORK, 300, 20, 0, LEASE_HOLDER)
        await conn.execute("ANALYZE")
        # (DELETE, not TRUNCATE: TRUNCATE would reset the row counts the planner reads.)
        for table in ("outbox", "queue", "dead_letters", "delivery_history", "attempts"):
            await conn.execute(f"DELETE FROM courier.{table}")
        await conn.execute("DELETE FROM courier.relays")
    await _run(conn, HISTORY_SQL, HISTORY)
    await _run(conn, HISTORY_ROWS)
    await _run(conn, OPEN_WORK, 300, 2000, 50, LEASE_HOLDER)


@pytest.fixture(scope="module")
def big(server_dsn: str) -> Iterator[dict[str, str]]:
    """The two databases (see the module docstring)."""
    with databases_by_state(server_dsn, "pgcourier_plans", STATES, _load) as dsns:
        yield dsns


def body_statements(source: str, variables: list[str]) -> list[str]:
    """The SQL statements of a PL/pgSQL body, variables as $1, $2, ... (in ``variables``
    order), as PL/pgSQL itself prepares them; IF conditions that query a table included."""
    text = re.sub(r"--[^\n]*", "", source)
    found: list[str] = []
    for piece in text.split(";"):
        rest = piece.strip()
        while True:
            rest = re.sub(r"^(#[^\n]*|BEGIN\b|END IF\b|ELSE\b)\s*", "", rest, flags=re.I)
            condition = re.match(r"(?is)^(?:IF|ELSIF)\s+(.*?)\s+THEN\b\s*", rest)
            if condition is None:
                break
            if re.search(r"\bSELECT\b", condition.group(1), re.I):
                found.append("SELECT " + condition.group(1))
            rest = rest[condition.end() :]
        rest = re.sub(r"(?i)^RETURN QUERY\s+", "", rest)
        if re.match(r"(?i)(SELECT|WITH|INSERT|UPDATE|DELETE)\b", rest):
            # (SELECT ... INTO a, b: the variables go; INSERT INTO courier.t stays.)
            found.append(re.sub(r"(?i)\s+INTO\s+(?!courier\.)\w+(\s*,\s*\w+)*\b", "", rest))
    out = []
    for sql in found:
        for n, name in enumerate(variables, start=1):
            sql = re.sub(rf"(?<![\w.$]){re.escape(name)}\b", f"${n}", sql)
        out.append(sql)
    return out


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        items = ("NULL" if v is None else '"' + str(v).replace('"', '\\"') + '"' for v in value)
        value = "{" + ",".join(items) + "}"
    return "'" + str(value).replace("'", "''") + "'"


@dataclasses.dataclass
class Plan:
    statement: str
    cost: float
    seq_scans: list[str]


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


async def explain(
    conn: asyncpg.Connection, sql: str, args: list[Any], types: list[str] | None = None
) -> Plan:
    """Prepare ``sql`` and explain its execution with ``args`` (under the session's
    plan_cache_mode)."""
    declared = f"({', '.join(types)})" if types else ""
    await conn.execute(f"PREPARE hot{declared} AS {sql}")
    try:
        call = f"({', '.join(_literal(a) for a in args)})" if args else ""
        [plan] = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE hot{call}"))
    finally:
        await conn.execute("DEALLOCATE hot")
    root = plan["Plan"]
    scans = [
        n["Relation Name"]
        for n in _walk(root)
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG_TABLES
    ]
    return Plan(sql, float(root["Total Cost"]), scans)


async def _function_source(conn: asyncpg.Connection, signature: str) -> str:
    source: str = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure", signature
    )
    return source


async def _facts(conn: asyncpg.Connection) -> dict[str, Any]:
    """Ids and values the statements are run with, read from the database."""
    leased = await conn.fetchval(
        "SELECT array_agg(id ORDER BY id) FROM courier.queue WHERE lease_token = $1", LEASE_HOLDER
    )
    keyed = await conn.fetch(
        "SELECT endpoint_id, ordering_key, id FROM courier.queue"
        " WHERE ordering_key IS NOT NULL AND lease_token = $1 LIMIT 10",
        LEASE_HOLDER,
    )
    return {
        "leased": leased,
        "keyed": keyed,
        "enabled": await conn.fetchval("SELECT array_agg(id) FROM courier.endpoints WHERE enabled"),
        "deleted": await conn.fetchval(
            "SELECT id FROM courier.endpoints WHERE deleted_at IS NOT NULL"
        ),
        "fresh": await conn.fetchval(
            "SELECT array_agg(id) FROM (SELECT id FROM courier.outbox"
            " WHERE fanned_out_at IS NULL ORDER BY seq LIMIT 128) AS o"
        ),
        "dead": await conn.fetchval(
            "SELECT array_agg(id) FROM (SELECT id FROM courier.dead_letters"
            " ORDER BY dead_at DESC, id DESC LIMIT 100) AS d"
        ),
        "old_event": await conn.fetchval(
            "SELECT event_id FROM courier.delivery_history WHERE id = 12345"
        ),
        "relay": await conn.fetchval("SELECT id FROM courier.relays LIMIT 1"),
    }


async def _claim(conn: asyncpg.Connection, f: dict[str, Any]) -> list[Plan]:
    source = await _function_source(
        conn, "courier.claim(integer, double precision, uuid, integer, integer)"
    )
    variables = ["p_limit", "p_lease", "p_relay", "p_fan_out", "p_max_claims", "fresh", "locked"]
    variables += ["lease", "poison", "spend"]
    statements = body_statements(source, variables)
    # Step 1 is courier.fan_out (0007): its statements are the claim's too.
    statements += body_statements(
        await _function_source(conn, "courier.fan_out(integer)"), variables
    )
    # Lock; pick; lease; bury poison; spend tokens (0023); fan-out: take, mark, insert.
    assert len(statements) == 8, statements
    types = ["integer", "double precision", "uuid", "integer", "integer", "uuid[]", "uuid[]"]
    types += ["bigint[]", "bigint[]", "uuid[]"]
    args = [128, 30.0, uuid.uuid4(), 128, 10, f["fresh"], f["enabled"]]
    args += [f["leased"], f["leased"], f["enabled"]]
    return [await explain(conn, s, args, types) for s in statements]


async def _trigger(conn: asyncpg.Connection, f: dict[str, Any]) -> list[Plan]:
    """What a producer's INSERT runs: enqueue's statements and both outbox triggers'."""
    plans = []
    enqueue = await _function_source(conn, "courier.enqueue(text, jsonb, text, text, text, uuid)")
    names = ("event_type", "payload", "ordering_key", "idempotency_key", "tenant", "endpoint_id")
    variables = [f"enqueue.{v}" for v in names]
    statements = body_statements(enqueue, variables)
    assert len(statements) == 3, statements  # insert, insert with a key, look the key up
    args = ["order.paid", '{"n": 1}', None, "key-1", "acme", f["enabled"][0]]
    types = ["text", "jsonb", "text", "text", "text", "uuid"]
    plans += [await explain(conn, s, args, types) for s in statements]
    # The validation looks up a targeted event's endpoint (0007): NEW.endpoint_id as a parameter.
    for trigger, count, new in (
        ("outbox_validate", 2, ["NEW.endpoint_id"]),
        ("outbox_wake", 2, []),
    ):
        statements = body_statements(await _function_source(conn, f"courier.{trigger}()"), new)
        assert len(statements) == count, statements
        values = [f["enabled"][0]] if new else []
        plans += [await explain(conn, s, values, ["uuid"] if new else None) for s in statements]
    return plans


async def _function_statements(
    conn: asyncpg.Connection,
    signature: str,
    variables: list[str],
    args: list[Any],
    count: int,
    types: list[str] | None = None,
) -> list[Plan]:
    """The plans of the statements of a PL/pgSQL function, its variables as parameters (of
    ``types``, where the statements alone do not tell)."""
    statements = body_statements(await _function_source(conn, signature), variables)
    assert len(statements) == count, statements
    plans = []
    for sql in statements:
        used = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
        plans.append(await explain(conn, sql, args[:used], types[:used] if types else None))
    return plans


async def _going_idle(conn: asyncpg.Connection, f: dict[str, Any]) -> list[Plan]:
    """courier.claim_going_idle (0020): courier.relay_idle's statements (the flag's upsert, the
    look at it when its row is held), then the claim and the next due time (checked above)."""
    relay_idle = (
        "courier.relay_idle(uuid, boolean, text, integer, double precision, double precision)"
    )
    names = ["p_relay", "p_idle", "p_hostname", "p_pid"]
    plans = await _function_statements(conn, relay_idle, names, [f["relay"], True, "h", 1], 2)
    # What the call itself runs: the claim's rows, as a function scan (nothing to plan).
    call = db.QUERIES["claim_going_idle"]
    args = [f["relay"], "h", 1, 0.05, 0.01, 128, 30.0, 128, 10]
    return [*plans, await explain(conn, call, args)]


def _named(name: str, *args: Any) -> Any:
    async def run(conn: asyncpg.Connection, f: dict[str, Any]) -> list[Plan]:
        values = [a(f) if callable(a) else a for a in args]
        return [await explain(conn, db.QUERIES[name], values)]

    return run


NOW = datetime.now(UTC)
START = datetime.min.replace(tzinfo=UTC)
NIL = uuid.UUID(int=0)


def _completion(f: dict[str, Any]) -> list[Any]:
    ids = f["leased"]
    statuses = [("delivered", "dead", "pending")[i % 3] for i in range(len(ids))]
    return [
        ids,
        statuses,
        [60.0 if s == "pending" else None for s in statuses],
        [200 if s == "delivered" else 500 for s in statuses],
        [None if s == "delivered" else "HTTP 500" for s in statuses],
        [NOW] * len(ids),
        LEASE_HOLDER,
        [NIL] * len(ids),  # the attempt log's columns: event, endpoint, attempt, duration ...
        [NIL] * len(ids),
        [1] * len(ids),
        [12.5] * len(ids),
        ["ok"] * len(ids),
        [None] * len(ids),
    ]


# courier.complete_deliveries (0021): its parameters, their names and types.
COMPLETION = (
    ("p_ids", "bigint[]"),
    ("p_status", "text[]"),
    ("p_delay", "float8[]"),
    ("p_code", "int[]"),
    ("p_error", "text[]"),
    ("p_started", "timestamptz[]"),
    ("p_relay", "uuid"),
    ("p_event", "uuid[]"),
    ("p_endpoint", "uuid[]"),
    ("p_attempt", "int[]"),
    ("p_duration", "float8[]"),
    ("p_body", "text[]"),
    ("p_attempt_error", "text[]"),
)


async def _complete(conn: asyncpg.Connection, f: dict[str, Any]) -> list[Plan]:
    names, types = [n for n, _ in COMPLETION], [t for _, t in COMPLETION]
    signature = f"courier.complete_deliveries({', '.join(types)})"
    return await _function_statements(conn, signature, names, _completion(f), 1, types)


STATEMENTS: dict[str, Any] = {
    "claim": _claim,
    "producer trigger": _trigger,
    "complete": _complete,
    "hold key followers": _named(
        "hold_key_followers",
        lambda f: [r["endpoint_id"] for r in f["keyed"]],
        lambda f: [r["ordering_key"] for r in f["keyed"]],
        lambda f: [r["id"] for r in f["keyed"]],
        lambda f: [NOW + timedelta(minutes=1)] * len(f["keyed"]),
    ),
    "renew": _named("renew_leases", lambda f: f["leased"], LEASE_HOLDER, 30.0),
    "release": _named("release_leases", lambda f: f["leased"], LEASE_HOLDER),
    "next due": lambda c, f: _function_statements(c, "courier.next_due()", [], [], 1),
    "gauges": _named("delivery_gauges"),
    "housekeeping sweep": _named("sweep_deleted_endpoints"),
    "vacuum check": _named("queue_vacuum_due", 10_000, 60.0),
    "going idle": _going_idle,
    "dead letters: list": _named("list_dead", None, None, None, None, None, None, 101, None),
    "dead letters: list filtered": _named(
        "list_dead",
        lambda f: f["enabled"][0],
        "order.failed",
        NOW - timedelta(days=1),
        NOW,
        NOW,
        2**62,
        101,
        "acme",
    ),
    "dead letters: show": _named("get_dead", lambda f: f["dead"][0]),
    "dead letters: match": _named("matching_dead_ids", None, "order.failed", None, None, "acme"),
    "dead letters: replay": _named("replay_dead", lambda f: f["dead"]),
    "dead letters: discard": _named("discard_dead", lambda f: f["dead"]),
    "event: deliveries": _named("event_deliveries", lambda f: f["old_event"]),
    "event: attempts": _named("event_attempts", lambda f: f["old_event"], None, 101),
    "event: show": _named("get_event", lambda f: f["old_event"]),
    "endpoint: delete": _named("discard_endpoint_deliveries", lambda f: f["enabled"][0]),
    "endpoint: recoverable": _named(
        "recoverable_deliveries", lambda f: f["enabled"][0], NOW - timedelta(days=1)
    ),
    "events: one tenant's": _named("list_tenant_events", None, None, None, None, None, 101, "acme"),
    "tenant stats": _named("tenant_stats", "acme", 86400.0),
    "test send: first attempt": _named("first_attempt", lambda f: f["old_event"]),
    "endpoint: recover": _named(
        "recover_deliveries",
        lambda f: f["dead"],
        lambda f: f["enabled"][0],
        NOW - timedelta(days=1),
    ),
    # Retention (issue 12): the walks start at the beginning of time and reach past the whole
    # history; the deletes take their ids by = ANY.
    "retention: prune events": _named(
        "prune_events", START, NIL, NOW - timedelta(days=1), NIL, True, 500
    ),
    "retention: dry run": _named(
        "prune_events", START, NIL, NOW - timedelta(days=1), NIL, False, 500
    ),
    "retention: prune dead": _named("prune_dead", START, 0, NOW, 500),
    "retention: orphaned events": _named(
        "prune_orphaned_events", lambda f: f["fresh"], NOW - timedelta(days=1)
    ),
    "retention: not found": _named("delivery_whereabouts", 12345),
    "retention: held due": _named("lock_due_held", 500, START, NIL, NOW),
    "retention: re-check held": _named(
        "recheck_held", lambda f: f["fresh"], True, 60.0, 3600.0, 86400.0
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("statement", list(STATEMENTS))
async def test_hot_statement_plans_hold_at_any_statistics(
    big: dict[str, str], state: str, mode: str, statement: str
) -> None:
    conn = await asyncpg.connect(big[state])
    try:
        facts = await _facts(conn)
        await conn.execute(f"SET plan_cache_mode = {mode}")
        plans = await STATEMENTS[statement](conn, facts)
    finally:
        await conn.close()
    report = os.environ.get("PGCOURIER_PLAN_REPORT")
    if report:  # a line per test, for a table of the costs (issue 10's note)
        worst = max(p.cost for p in plans)
        scans = sorted({t for p in plans for t in p.seq_scans})
        line = json.dumps([statement, state, mode, worst, scans]) + "\n"
        with Path(report).open("a") as out:  # noqa: ASYNC230 - one short line
            out.write(line)
    for plan in plans:
        assert plan.seq_scans == [], f"seq scan of {plan.seq_scans} in:\n{plan.statement}"
        assert plan.cost < JIT_ABOVE_COST, f"cost {plan.cost:.0f} in:\n{plan.statement}"


async def test_the_history_is_big_and_the_statistics_are_as_built(big: dict[str, str]) -> None:
    """The states are what the plans were tested in: a million finished rows beside a few
    hundred open ones; the stale database's statistics say the history is tiny, the missing
    one's say nothing."""
    for state, dsn in big.items():
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM courier.delivery_history") == HISTORY
            assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 300
            tuples = await conn.fetchval(
                "SELECT reltuples FROM pg_class WHERE oid = 'courier.delivery_history'::regclass"
            )
            analyzed = await conn.fetchval(
                "SELECT count(*) FROM pg_stats WHERE schemaname = 'courier'"
            )
        finally:
            await conn.close()
        if state == "stale":
            assert 0 <= tuples < 1000
            assert analyzed > 0
        else:
            assert tuples == -1
            assert analyzed == 0
