"""An endpoint's failure history: the circuit's cool-down doubles on each failed probe (up to the
cap), and enabling an endpoint gives it a fresh start."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.runtime import Runtime
from tests.integration.attempts import all_attempts
from tests.integration.helpers import Receiver, add_endpoint, statuses, wait_until

StartRelay = Callable[..., contextlib.AbstractAsyncContextManager[Runtime]]


async def test_each_failed_probe_doubles_the_cool_down_up_to_the_cap(
    conn: asyncpg.Connection, receiver: Receiver, relay: StartRelay
) -> None:
    await add_endpoint(conn, receiver.url("/down"))
    receiver.default = 500
    await ops.enqueue(conn, "a.b", {})
    # One failure opens the circuit; retries are due at once, so only the circuit spaces them.
    async with relay(
        retry_schedule=",".join(["10ms"] * 10),
        circuit_failures=1,
        circuit_cooldown=0.2,
        circuit_max_cooldown=0.8,
    ):
        await receiver.wait_count(5, timeout=10)
        await wait_until(lambda: _attempts(conn, 5))
    starts = await conn.fetch("SELECT started_at FROM courier.attempts ORDER BY started_at")
    times = [r["started_at"] for r in starts[:5]]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    # Opened with 0.2 s; each failed probe doubles it: 0.4, then 0.8, then capped at 0.8.
    expected = [0.2, 0.4, 0.8, 0.8]
    for gap, cool_down in zip(gaps, expected, strict=True):
        # Never early (a cool-down that did not double shows here: 0.2 where 0.4 is due); late
        # only by the relay's look-again interval and a claim, which a loaded machine stretches.
        assert cool_down - 0.02 <= gap < cool_down + 1.0, (gaps, expected)
    cool_down = await conn.fetchval("SELECT circuit_cooldown FROM courier.endpoints")
    assert cool_down == pytest.approx(0.8)


async def test_enabling_an_endpoint_forgets_its_failure_history(
    conn: asyncpg.Connection, receiver: Receiver, relay: StartRelay
) -> None:
    endpoint = await add_endpoint(conn, receiver.url("/back"))
    event_id = await ops.enqueue(conn, "a.b", {})
    # What a day of failures leaves behind: disabled for failing continuously, many consecutive
    # failures, the circuit open for another hour.
    await conn.execute(
        "UPDATE courier.endpoints SET enabled = false, disabled_at = now(),"
        " disabled_reason = 'failing continuously since yesterday',"
        " failing_since = now() - interval '1 day', consecutive_failures = 50,"
        " circuit_state = 'open', circuit_until = now() + interval '1 hour',"
        " circuit_cooldown = 3600"
    )
    # Back: one more failure, then success. Kept history would hold the retry behind the open
    # circuit (state kept), open it again at once (50 failures kept, threshold 3), or disable the
    # endpoint again at once (failing for a day kept, limit 60 s).
    receiver.script["/back"] = [500]
    async with relay(retry_schedule="50ms", circuit_failures=3, disable_after=60):
        shown = await ops.set_endpoint_enabled(conn, endpoint["id"], True)
        assert (shown["enabled"], shown["disabled_reason"]) == (True, None)
        await wait_until(lambda: _all_delivered(conn), timeout=5)
    attempts = await all_attempts(conn, str(event_id))
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (500, "retry"),
        (200, "delivered"),
    ]
    shown = await ops.get_endpoint(conn, endpoint["id"])
    assert (shown["enabled"], shown["circuit_state"], shown["consecutive_failures"]) == (
        True,
        "closed",
        0,
    )


async def _all_delivered(conn: asyncpg.Connection) -> bool:
    return await statuses(conn) == {"delivered": 1}


async def _attempts(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) >= $1 FROM courier.attempts", n))
