"""Poison deliveries (issue 12, part 4): a delivery claimed PGCOURIER_MAX_CLAIMS times without an
attempt recorded (each relay holding it died) is dead-lettered with a reason saying so, and the
relay that buries it logs an error with its ids; other deliveries keep flowing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from pgcourier import ops
from pgcourier.model import AttemptResult, Completion
from pgcourier.policy import Retry
from pgcourier.store import PgStore
from tests.integration.helpers import Receiver, add_endpoint, assert_verified, wait_until
from tests.integration.test_processes import run_processes, stop

REASON = "without an attempt recorded: the relay may be crashing on it"


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PgStore]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield PgStore(pool, max_claims=3)
    finally:
        await pool.close()


async def _expire(conn: asyncpg.Connection) -> None:
    """Every lease runs out now (as when the relay holding them died)."""
    await conn.execute("UPDATE courier.queue SET due_at = now() - interval '1 second'")


async def test_the_claim_buries_what_was_claimed_too_often_without_an_attempt(
    conn: asyncpg.Connection, store: PgStore, receiver: Receiver
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    events = [await ops.enqueue(conn, "order.paid", {"i": i}) for i in range(5)]
    relay = uuid.uuid4()
    for n in range(1, 4):
        jobs = await store.claim(relay, 10, 30.0)
        assert len(jobs) == 5
        assert await conn.fetchval("SELECT array_agg(DISTINCT claims) FROM courier.queue") == [n]
        leases = await conn.fetch(
            "SELECT extract(epoch FROM due_at - now()) AS s FROM courier.queue"
        )
        if n == 1:  # a first claim: the plain lease
            assert all(29 < r["s"] <= 30 for r in leases)
        else:  # claimed again without an attempt: leases spread between one and two leases
            assert all(29 < r["s"] <= 60 for r in leases)
            assert max(r["s"] for r in leases) - min(r["s"] for r in leases) > 0.1
        await _expire(conn)
    with capture_logs() as logs:
        assert await store.claim(relay, 10, 30.0) == []
    assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 0
    dead = await conn.fetch("SELECT * FROM courier.dead_letters ORDER BY id")
    assert [d["event_id"] for d in dead] == events
    assert {d["last_error"].split(" (")[0] for d in dead} == {"claimed 3 times " + REASON}
    attempts = await conn.fetch("SELECT * FROM courier.attempts ORDER BY id")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "dead")] * 5
    assert all(a["error"].startswith("claimed 3 times " + REASON) for a in attempts)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 5
    assert {e["event_id"] for e in errors} == {str(e) for e in events}
    assert {e["endpoint_id"] for e in errors} == {str(endpoint["id"])}
    assert {e["delivery_id"] for e in errors} == {d["id"] for d in dead}
    assert "crashing" in errors[0]["event"]


async def test_one_claim_leases_earliest_due_first_then_buries_and_spends_tokens_for_leases(
    conn: asyncpg.Connection, receiver: Receiver
) -> None:
    """Leased and poison deliveries in one claim (0023 leases, buries and spends in statements
    of their own): the leased come back earliest due first, then the buried; the endpoint's
    rate tokens pay for the leased ones only."""
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    await conn.execute(
        "UPDATE courier.endpoints SET rate_limit = 100 WHERE id = $1", endpoint["id"]
    )
    first, poison, last = [await ops.enqueue(conn, "order.paid", {"i": i}) for i in range(3)]
    assert await conn.fetchval("SELECT courier.fan_out(10)") == 3
    # Due in the order last, first (not the ids' order); the poison one claimed 3 times.
    await conn.execute(
        "UPDATE courier.queue SET due_at = now() - CASE event_id WHEN $1 THEN interval '1 s'"
        " WHEN $2 THEN interval '2 s' ELSE interval '3 s' END,"
        " claims = CASE event_id WHEN $2 THEN 3 ELSE 0 END",
        first,
        poison,
    )
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT event_id, poisoned FROM courier.claim(10, 30, $1, 0, 3)", uuid.uuid4()
        )
        # Full bucket (100) less the two leases, at this transaction's now().
        tokens = await conn.fetchval(
            "SELECT rate_tokens FROM courier.endpoints WHERE id = $1", endpoint["id"]
        )
    assert [(r["event_id"], r["poisoned"]) for r in rows] == [
        (last, False),
        (first, False),
        (poison, True),
    ]
    assert tokens == 98
    assert await conn.fetchval("SELECT array_agg(event_id) FROM courier.dead_letters") == [poison]
    leased = await conn.fetch("SELECT event_id, claims FROM courier.queue ORDER BY id")
    assert [(r["event_id"], r["claims"]) for r in leased] == [(first, 1), (last, 1)]


async def test_a_recorded_attempt_or_a_lease_handed_back_resets_the_count(
    conn: asyncpg.Connection, store: PgStore, receiver: Receiver
) -> None:
    await add_endpoint(conn, receiver.url("/hook"))
    await ops.enqueue(conn, "order.paid", {"i": 1})
    relay = uuid.uuid4()
    for _ in range(2):
        [job] = await store.claim(relay, 10, 30.0)
        await _expire(conn)
    [job] = await store.claim(relay, 10, 30.0)
    assert await conn.fetchval("SELECT claims FROM courier.queue") == 3
    # A failed attempt is recorded: the count starts again (it is a retry, not poison).
    result = AttemptResult(started_at=datetime.now(UTC), duration=0.01, status=500)
    await store.complete(relay, [Completion(job, result, Retry(after=0.0))])
    assert await conn.fetchval("SELECT claims FROM courier.queue") == 0
    # A lease handed back at shutdown gives its claim back.
    await _expire(conn)
    [job] = await store.claim(relay, 10, 30.0)
    await store.release(relay, [job.delivery_id])
    assert await conn.fetchval("SELECT claims FROM courier.queue") == 0
    assert await conn.fetchval("SELECT count(*) FROM courier.dead_letters") == 0


# Test-only: a relay process whose transport kills the process on one payload, as a crash in
# a library would. Installed through sitecustomize (PYTHONPATH), so that `pgcourier run` and the
# children `run --processes` starts run unchanged product code with this one wrapper around the
# transport's send.
SITECUSTOMIZE = """
import os

if os.environ.get("PGCOURIER_TEST_POISON"):
    from pgcourier.slack import Router

    _send = Router.send

    async def send(self, job):
        if '"poison"' in job.payload:
            os._exit(70)
        return await _send(self, job)

    Router.send = send
"""


# Relays die three times and are restarted, each time after a lease runs out: on a busy machine
# (or Debian 15 in CI) that takes longer than the suite's default 60 s.
@pytest.mark.timeout(180)
async def test_a_delivery_that_kills_its_relay_ends_in_the_dead_letters(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, tmp_path: Path
) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    endpoint = await add_endpoint(conn, receiver.url("/hook"))
    async with conn.transaction():
        poison = await ops.enqueue(conn, "order.paid", {"poison": True})
        first = [await ops.enqueue(conn, "order.paid", {"i": i}) for i in range(5)]
    async with run_processes(
        2,
        dsn,
        PYTHONPATH=str(tmp_path),
        PGCOURIER_TEST_POISON="1",
        # 5, not fewer: a delivery that happens to be claimed with the poison one each time dies
        # with it each time, and at the bound it is buried too (the random lease makes that
        # rarer with every claim; see the note in 0009).
        PGCOURIER_MAX_CLAIMS="5",
        PGCOURIER_LEASE="2s",
        PGCOURIER_DELIVERY_TIMEOUT="1s",
        PGCOURIER_POLL_INTERVAL="100ms",
    ) as parent:
        # Others keep flowing while relays die on the poison one and are restarted.
        later = []
        for i in range(10):
            later.append(await ops.enqueue(conn, "order.paid", {"later": i}))
            await asyncio.sleep(0.5)

        async def buried() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM courier.dead_letters WHERE event_id = $1", poison
                )
            )

        await wait_until(buried, timeout=90, interval=0.2)
        expected = {str(e) for e in first + later}
        await receiver.wait_for(lambda: expected <= set(receiver.ids()), timeout=60)
        await stop(parent)
    # The relays did die on it (restarted by the parent), and one of them buried it.
    restarts = parent.logged("relay process exited unexpectedly; restarting it")
    assert len(restarts) >= 3
    assert {r["exit_code"] for r in restarts} == {70}
    [noticed] = [line for line in parent.lines if "crashing" in str(line.get("event"))]
    assert noticed["level"] == "error"
    assert noticed["event_id"] == str(poison)
    assert noticed["endpoint_id"] == str(endpoint["id"])
    dead = await conn.fetchrow("SELECT * FROM courier.dead_letters WHERE event_id = $1", poison)
    assert dead["id"] == noticed["delivery_id"]
    assert dead["last_error"].startswith("claimed 5 times " + REASON)
    # Everything else was delivered, signed, and nothing else is dead.
    assert await conn.fetchval("SELECT count(*) FROM courier.dead_letters") == 1
    assert str(poison) not in receiver.ids()
    for request in receiver.requests:
        assert_verified(request, endpoint["secret"])
