"""A claim's work is bounded by the work in flight, not by the retries waiting at an endpoint nor
by a flood due at one, whatever the queue's statistics say (issue 11, under issue 10's rule).

An endpoint that was down for a while comes back with a backlog of deliveries waiting for their
retry (due later), a few leased, a few due. Every claim counts the endpoint's leased rows (its
``max_in_flight``) and picks its due ones; neither may walk the backlog. Until 0016 the count
could be planned through ``queue_endpoint_due`` (its ``due_at > now()`` matched that index
too), which holds every waiting retry: with the queue's statistics missing, every claim read
all of them (10 ms a claim for 100,000 retries, on 15, 16 and 18 alike).

The same for a flood (``due_backlog``): 20,000 deliveries due at once at an endpoint whose
``max_in_flight`` lets each claim take a few (0022); and beside that flood, the statements the
relay runs for every batch besides the claim (the completion, leases renewed, released or handed
back, an ordering key's followers held, the next due time).

Four databases per backlog, one per state of the queue's statistics: ``missing`` (migrated
without its ANALYZE statements, never analyzed), ``stale`` (analyzed by the migration while empty),
``vacuumed`` (analyzed while empty, then vacuumed with the backlog in it, as the relay's own
vacuum does: the planner knows the table's size but nothing of its columns), ``analyzed``
(fresh). Not here: statistics taken while every queued row was leased and the backlog come
since, which tell the planner the endpoint's rows are all leases; it then reads the table
sequentially, rightly by what it was told (whether it does depends on what a concurrent
snapshot let the vacuum mark all-visible: it did on a busy CI server, not alone).
Autovacuum is off for the queue so that the statistics stay as built. The statements
are read from the functions' source and run (``EXPLAIN ANALYZE``, rolled back) with custom
and with generic plans, and every plan node is held to the rows it looked at.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from pgcourier import db
from tests.integration.test_plans import (
    COMPLETION,
    LEASE_HOLDER,
    MODES,
    NOW,
    Load,
    _completion,
    _function_source,
    _literal,
    _walk,
    body_statements,
    databases_by_state,
)

pytestmark = pytest.mark.timeout(300)
STATES = ("missing", "stale", "vacuumed", "analyzed")
BACKLOG = 20_000
# Rows a plan node may look at: the claim's limit (128) and the endpoint's leases and due rows
# (a few hundred), far below the backlog.
MAX_ROWS = 1_000

# One endpoint: BACKLOG deliveries waiting for a retry an hour from now, 4 leased, 200 due.
LOAD = """
INSERT INTO courier.endpoints (url, event_types, secret)
VALUES ('https://r.example/back', ARRAY['*'], 'whsec_' || repeat('A', 32));
INSERT INTO courier.outbox (event_type, payload, fanned_out_at)
SELECT 'order.paid', jsonb_build_object('n', g), now() FROM generate_series(1, {total}) AS g;
INSERT INTO courier.queue (event_id, endpoint_id, attempts, due_at, lease_token, last_attempt_at)
SELECT o.id, ep.id,
       CASE WHEN o.seq <= {backlog} THEN 1 ELSE 0 END,
       CASE WHEN o.seq <= {backlog} THEN now() + interval '1 hour' + o.seq * interval '1 ms'
            WHEN o.seq <= {backlog} + 4 THEN now() + interval '10 minutes'
            ELSE now() - interval '1 second' END,
       CASE WHEN o.seq > {backlog} AND o.seq <= {backlog} + 4 THEN gen_random_uuid() END,
       CASE WHEN o.seq <= {backlog} THEN now() - interval '1 minute' END
FROM courier.outbox AS o, courier.endpoints AS ep;
"""


# One endpoint: a flood of BACKLOG deliveries all due now (one producer's batch, or a tenant's
# burst), 4 of them leased (by one relay, LEASE_HOLDER). Its max_in_flight (10, the default)
# lets each claim take 6. The leased ones and the flood's last KEYED carry ordering key 'k': the
# followers a retry of the key's head would hold (the claim, earliest due first, never reaches
# them).
KEYED = 200
LOAD_DUE = """
INSERT INTO courier.endpoints (url, event_types, secret)
VALUES ('https://r.example/flood', ARRAY['*'], 'whsec_' || repeat('A', 32));
INSERT INTO courier.outbox (event_type, payload, fanned_out_at)
SELECT 'order.paid', jsonb_build_object('n', g), now() FROM generate_series(1, {total}) AS g;
INSERT INTO courier.queue (event_id, endpoint_id, due_at, lease_token, ordering_key)
SELECT o.id, ep.id,
       CASE WHEN o.seq <= 4 THEN now() + interval '1 minute'
            ELSE now() - interval '1 second' + o.seq * interval '1 us' END,
       CASE WHEN o.seq <= 4 THEN '{holder}'::uuid END,
       CASE WHEN o.seq <= 4 OR o.seq > {total} - {keyed} THEN 'k' END
FROM courier.outbox AS o, courier.endpoints AS ep;
"""


def _loader(sql: str) -> Load:
    async def load(conn: asyncpg.Connection, state: str) -> None:
        await conn.execute("ALTER TABLE courier.queue SET (autovacuum_enabled = false)")
        await conn.execute("SET session_replication_role = replica")  # a bulk load's way
        await conn.execute(
            sql.format(total=BACKLOG + 204, backlog=BACKLOG, holder=LEASE_HOLDER, keyed=KEYED)
        )
        if state == "vacuumed":
            await conn.execute("VACUUM courier.queue")
        if state == "analyzed":
            await conn.execute("ANALYZE courier.queue")

    return load


@pytest.fixture(scope="module")
def backlog(server_dsn: str) -> Iterator[dict[str, str]]:
    with databases_by_state(server_dsn, "pgcourier_backlog", STATES, _loader(LOAD)) as dsns:
        yield dsns


@pytest.fixture(scope="module")
def due_backlog(server_dsn: str) -> Iterator[dict[str, str]]:
    with databases_by_state(server_dsn, "pgcourier_flood", STATES, _loader(LOAD_DUE)) as dsns:
        yield dsns


class _Rollback(Exception):
    pass


def _looked_at(node: dict[str, Any]) -> int:
    """Rows a plan node produced over all its loops, plus those it read and threw away."""
    produced = float(node.get("Actual Rows", 0)) * float(node.get("Actual Loops", 1))
    removed = sum(
        float(node.get(k, 0)) for k in ("Rows Removed by Filter", "Rows Removed by Index Recheck")
    )
    return int(produced + removed)


async def _run_plan(
    conn: asyncpg.Connection, sql: str, args: list[Any], types: list[str] | None = None
) -> dict[str, Any]:
    """Run ``sql`` prepared with ``args`` under EXPLAIN ANALYZE, rolled back; its plan's root.
    Without ``types`` the server infers the parameters' types from the statement."""
    call = f"({', '.join(_literal(a) for a in args)})" if args else ""
    declared = f"({', '.join(types)})" if types else ""
    await conn.execute(f"PREPARE hot{declared} AS {sql}")
    try:
        async with conn.transaction():
            [plan] = json.loads(
                await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE hot{call}")
            )
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.execute("DEALLOCATE hot")
    root: dict[str, Any] = plan["Plan"]
    return root


async def _bounded_run(
    conn: asyncpg.Connection, sql: str, args: list[Any], types: list[str] | None, case: str
) -> dict[str, Any]:
    """Run ``sql`` as :func:`_run_plan` does, every plan node held to MAX_ROWS looked at."""
    root = await _run_plan(conn, sql, args, types)
    worst = max(_walk(root), key=_looked_at)
    assert _looked_at(worst) <= MAX_ROWS, (
        f"{worst['Node Type']} on {worst.get('Index Name') or worst.get('Relation Name')}"
        f" looked at {_looked_at(worst)} rows ({case}):\n{sql}"
    )
    return root


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
async def test_a_claim_does_not_walk_an_endpoints_retry_backlog(
    backlog: dict[str, str], state: str, mode: str
) -> None:
    await _claim_within_bounds(backlog[state], state, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
async def test_a_claim_does_not_walk_an_endpoints_due_backlog(
    due_backlog: dict[str, str], state: str, mode: str
) -> None:
    """A flood due at once at an endpoint held to its max_in_flight: each claim takes the few it
    has room for. Until 0022 the claim found the endpoints with due work by reading every due
    row (a hash of the queue's due rows by endpoint), and leased its picks by a hash join over
    the whole queue, once the statistics knew the flood: 20 ms a claim beside 40,000 due rows,
    so the flood drained at a few hundred a second and another tenant's events waited behind
    each of those claims (the benchmark's tenant flood, +20 ms p50 after its history run)."""
    await _claim_within_bounds(due_backlog[state], state, mode)


async def _claim_within_bounds(dsn: str, state: str, mode: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        source = await _function_source(
            conn, "courier.claim(integer, double precision, uuid, integer, integer)"
        )
        variables = ["p_limit", "p_lease", "p_relay", "p_fan_out", "p_max_claims", "locked"]
        variables += ["lease", "poison", "spend"]
        statements = body_statements(source, variables)
        # Lock the endpoints; pick; lease; bury poison; spend tokens (0023).
        assert len(statements) == 5, statements
        lock, pick, lease, bury, spend = statements
        endpoint = await conn.fetchval("SELECT id FROM courier.endpoints")
        args = [128, 30.0, uuid.uuid4(), 128, 10, [endpoint]]
        types = ["integer", "double precision", "uuid", "integer", "integer", "uuid[]"]
        types += ["bigint[]", "bigint[]", "uuid[]"]
        case = f"{state}, {mode}"
        for sql in (lock, pick):
            await _bounded_run(conn, sql, [*args, None, None, None], types, case)
        # The pick's ids, as the lease gets them: of the endpoint's 10 in flight (the default),
        # 4 are held, so 6 of its due deliveries are picked (the count is right, not only cheap).
        picked = await _fetch_rolled_back(conn, pick, [*args, None, None, None], types)
        ids = picked[0]  # the ids to lease, earliest due first
        assert ids is not None, picked
        assert len(ids) == 6, picked
        # The later steps given those ids, each by primary key whatever the flood: the lease
        # returns them; the burial takes them as if they were all poison.
        root = await _bounded_run(conn, lease, [*args, ids, None, None], types, case)
        assert _modified(root) == 6, case
        assert int(root["Actual Rows"]) == 6, case
        root = await _bounded_run(conn, bury, [*args, None, ids, None], types, case)
        assert _modified(root) == 6, case
        # The spending, with a rate limit set for it: the endpoint's one row written.
        await conn.execute("UPDATE courier.endpoints SET rate_limit = 100")
        try:
            root = await _bounded_run(conn, spend, [*args, None, None, [endpoint] * 6], types, case)
        finally:
            await conn.execute("UPDATE courier.endpoints SET rate_limit = NULL")
        assert _modified(root, "endpoints") == 1, case
    finally:
        await conn.close()


async def _fetch_rolled_back(
    conn: asyncpg.Connection, sql: str, args: list[Any], types: list[str]
) -> asyncpg.Record:
    """The one row ``sql`` returns with ``args``, its changes (and row locks) rolled back."""
    await conn.execute(f"PREPARE picked({', '.join(types)}) AS {sql}")
    try:
        async with conn.transaction():
            row = await conn.fetchrow(f"EXECUTE picked({', '.join(_literal(a) for a in args)})")
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.execute("DEALLOCATE picked")
    assert row is not None
    return row


def _modified(root: dict[str, Any], table: str = "queue") -> int:
    """Rows of ``table`` the statement's UPDATEs and DELETEs took (their inputs' rows)."""
    return sum(
        int(node["Plans"][0]["Actual Rows"] * node["Plans"][0]["Actual Loops"])
        for node in _walk(root)
        if node["Node Type"] == "ModifyTable" and node.get("Relation Name") == table
    )


Batch = tuple[list[str], list[Any], list[str] | None, int]


async def _per_batch(conn: asyncpg.Connection) -> dict[str, Batch]:
    """Each statement below as the relay runs it (a function's body with its variables as
    parameters), its arguments, their types where the statement does not tell them, and how
    many queue rows it must change."""
    leased = await conn.fetchval(
        "SELECT array_agg(id ORDER BY id) FROM courier.queue WHERE lease_token = $1", LEASE_HOLDER
    )
    endpoint = await conn.fetchval("SELECT id FROM courier.endpoints")
    names, types = [n for n, _ in COMPLETION], [t for _, t in COMPLETION]
    signature = f"courier.complete_deliveries({', '.join(types)})"
    complete = body_statements(await _function_source(conn, signature), names)
    next_due = body_statements(await _function_source(conn, "courier.next_due()"), [])
    assert len(complete) == len(next_due) == 1, (complete, next_due)
    later = NOW + timedelta(hours=1)
    q = db.QUERIES
    return {
        "complete": (complete, _completion({"leased": leased}), types, len(leased)),
        "renew": ([q["renew_leases"]], [leased, LEASE_HOLDER, 30.0], None, len(leased)),
        "release": ([q["release_leases"]], [leased, LEASE_HOLDER], None, len(leased)),
        "hand back": ([q["hand_back_unopened"]], [leased, LEASE_HOLDER, 60.0], None, len(leased)),
        "hold key followers": (
            [q["hold_key_followers"]],
            [[endpoint], ["k"], [leased[0]], [later]],
            None,
            KEYED,  # the leased ones behind the head are not moved (leased)
        ),
        "next due": (next_due, [], None, 0),
    }


PER_BATCH = ("complete", "renew", "release", "hand back", "hold key followers", "next due")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("statement", PER_BATCH)
async def test_per_batch_statements_do_not_walk_a_flood(
    due_backlog: dict[str, str], state: str, mode: str, statement: str
) -> None:
    """What the relay runs for every batch beside the claim, at the flooded endpoint: record
    its leased deliveries' attempts, renew, release or hand back their leases, hold an ordering
    key's followers behind a retry, read the next due time. Each finds its rows by id, by lease
    or by one probe per endpoint, so its cost must not grow with the flood (issue 11: a flood's
    cost is paid by every other tenant's latency). Checked by hand when 0022 mended the claim;
    held here so that a later change cannot quietly plan one of them over the whole queue."""
    conn = await asyncpg.connect(due_backlog[state])
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        statements, args, types, changes = (await _per_batch(conn))[statement]
        for sql in statements:
            root = await _bounded_run(conn, sql, args, types, f"{state}, {mode}")
            # It did its work (a statement that found nothing would look at nothing, too).
            assert _modified(root) == changes, (statement, state, mode)
    finally:
        await conn.close()
