"""Helpers for the console tests: a populated database, logging in, reading forms."""

from __future__ import annotations

import html
import re
from typing import Any

import asyncpg

from pgcourier import ops
from tests.integration.helpers import TOKEN, Receiver, add_endpoint, statuses, wait_until

# A payload a receiver or producer could send to trip an unescaped page.
HOSTILE = '<script>alert("x")</script>'


async def populate(conn: asyncpg.Connection, receiver: Receiver, relay: Any) -> dict[str, Any]:
    """One healthy endpoint and one failing one (circuit opened, dead letters), a few events
    delivered through a real relay; returns the endpoints and the event ids."""
    good = await add_endpoint(conn, receiver.url("/good"), ["order.*"])
    bad = await add_endpoint(conn, receiver.url("/bad"), ["order.*"])
    receiver.script["/bad"] = [500] * 50
    events = [await ops.enqueue(conn, "order.paid", {"n": i, "note": HOSTILE}) for i in range(3)]
    # No retries: a failure is dead at once; two failures in a row open the circuit.
    async with relay(retry_schedule="", circuit_failures=2, circuit_cooldown=3600):
        await receiver.wait_count(3, "/good")

        async def settled() -> bool:
            return (await statuses(conn)).get("dead", 0) >= 2

        await wait_until(settled)
    return {"good": good, "bad": bad, "events": [str(e) for e in events]}


async def backfill_history(
    conn: asyncpg.Connection, endpoint_id: str, *, failing_for: int = 0
) -> int:
    """Attempts of ``endpoint_id`` spread over the last hour (copies of its latest one, mostly
    delivered, some retried, a few dead; all failing in the last ``failing_for`` minutes), so
    that charts have an hour to draw. Returns how many rows were added."""
    added: int = await conn.fetchval(
        """
        WITH last AS (
            SELECT * FROM courier.attempts WHERE endpoint_id = $1 ORDER BY id DESC LIMIT 1
        ), ins AS (
            INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt, started_at,
                                          duration_ms, status_code, response_body, outcome)
            SELECT last.delivery_id, last.event_id, last.endpoint_id, 1,
                   now() - make_interval(mins => m, secs => k),
                   20 + (m * 7 + k * 13) % 60,
                   CASE WHEN m < $2 OR k % 11 = 0 THEN 503 ELSE 200 END, 'ok',
                   CASE WHEN k % 23 = 0 OR (m < $2 AND k % 3 = 0) THEN 'dead'
                        WHEN m < $2 OR k % 11 = 0 THEN 'retry'
                        ELSE 'delivered' END
            FROM last, generate_series(2, 58) AS m,
                 generate_series(1, 3 + (m * 5) % 9 + (CASE WHEN m BETWEEN 20 AND 30 THEN 8
                                                        ELSE 0 END)) AS k
            RETURNING 1
        )
        SELECT count(*) FROM ins
        """,
        endpoint_id,
        failing_for,
    )
    return added


async def login(client: Any) -> None:
    response = await client.post(
        "/ui/login", data={"token": TOKEN, "next": "/ui/"}, allow_redirects=False
    )
    assert response.status == 303, await response.text()


def csrf_for(page: str, action: str) -> str:
    """The CSRF token of the form posting to ``action`` on ``page``."""
    match = re.search(
        r'<form[^>]*action="' + re.escape(action) + r'"[^>]*>\s*<input type="hidden" '
        r'name="csrf_token" value="([0-9a-f]+)">',
        page,
    )
    assert match, f"no form posting to {action}"
    return match.group(1)


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))
