"""Test sends: a signed example event to one endpoint through the normal pipeline.

The event is an ordinary outbox row targeted at the endpoint (so fan-out gives it to that
endpoint alone) and marked ``test``; a relay signs and sends it like any other. The operation
then waits, bounded, for the relay's first attempt and returns it. Nothing here talks HTTP: what
the receiver sees is exactly what it sees in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput
from pgcourier.ops.endpoints import get_endpoint
from pgcourier.ops.validation import parse_uuid, plain, validate_event_type

TEST_EVENT_TYPE = "pgcourier.test"
# The relay's default request timeout (PGCOURIER_DELIVERY_TIMEOUT's default), for endpoints
# without a timeout of their own; plus the slack for a relay to wake, claim and record.
DEFAULT_TIMEOUT = 10.0
WAIT_SLACK = 5.0
MAX_WAIT = 330.0
POLL_INTERVAL = 0.1

# Gives a connection for one short step. The wait holds no connection between its looks: in
# `pgcourier run` the admin API shares the relay's small pool, and a connection held through the
# wait would be one fewer for the relay that is to make the attempt.
Acquire = Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]


def holding(conn: asyncpg.Connection) -> Acquire:
    """An :data:`Acquire` that gives ``conn`` every time (a caller with one connection)."""

    @contextlib.asynccontextmanager
    async def give() -> AsyncIterator[asyncpg.Connection]:
        yield conn

    return give


def example_payload(event_type: str) -> dict[str, Any]:
    """The payload a test send carries for a type the catalog has no example of: a small
    built-in one that says it is a test (:func:`send_test` prefers the catalog's example)."""
    return {
        "test": True,
        "message": "A test event sent by pgcourier to check this endpoint.",
        "event_type": event_type,
    }


async def send_test(
    acquire: Acquire,
    endpoint_id: str,
    *,
    event_type: str | None = None,
    payload: dict[str, Any] | None = None,
    wait_seconds: float | None = None,
) -> dict[str, Any]:
    """Send a test event to one endpoint and wait for the first attempt.

    Returns the event id and ``attempt`` (status, duration, the start of the response body,
    error, outcome), or ``attempt: None`` with a ``message`` when no relay made an attempt
    within ``wait_seconds`` (default: the endpoint's timeout, or the relay's default, plus a few
    seconds). The event stays queued then, and is sent when a relay runs. Must not run inside a
    transaction: the relay has to see the event while this waits. ``acquire`` gives a
    connection for each step (:func:`holding` for a single connection).
    """
    async with acquire() as conn:
        endpoint = await get_endpoint(conn, endpoint_id)
    event_type = validate_event_type(event_type or TEST_EVENT_TYPE, field="event_type")
    if wait_seconds is None:
        wait_seconds = (endpoint["timeout_seconds"] or DEFAULT_TIMEOUT) + WAIT_SLACK
    if not 0 <= wait_seconds <= MAX_WAIT:
        raise InvalidInput(f"wait_seconds must be between 0 and {MAX_WAIT:g}", field="wait_seconds")
    if not endpoint["enabled"]:
        # A disabled endpoint's deliveries are held: no relay will try it, so do not wait.
        wait_seconds = 0
    eid = parse_uuid(endpoint_id, field="id")
    with translate_errors():
        async with acquire() as conn:
            if payload is None:
                # The catalog's example of the type when it has one (what receivers are told to
                # expect), else the built-in one.
                example = await conn.fetchval(QUERIES["event_type_example"], event_type)
                payload = example_payload(event_type) if example is None else json.loads(example)
            body = json.dumps(payload)
            event_id = await conn.fetchval(QUERIES["enqueue_test"], event_type, body, eid)
        deadline = time.monotonic() + wait_seconds
        while True:
            async with acquire() as conn:
                attempt = await conn.fetchrow(QUERIES["first_attempt"], event_id)
            if attempt is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
    result: dict[str, Any] = {
        "event_id": str(event_id),
        "endpoint_id": endpoint["id"],
        "event_type": event_type,
        "test": True,
        "attempt": None if attempt is None else plain(attempt),
    }
    if not endpoint["enabled"]:
        result["message"] = (
            "the endpoint is disabled: the test event is held, and sent when it is enabled"
        )
    elif attempt is None:
        result["message"] = (
            f"no relay picked it up within {wait_seconds:g}s: is `pgcourier run` running? The "
            "event stays queued and is sent when a relay runs"
        )
    return result
