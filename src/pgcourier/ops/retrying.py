"""Retrying a short transaction that Postgres aborted because of a concurrent one.

Discards and replays of dead letters lock several rows in one statement, in the order of that
statement's plan; so do pruning and other operators' bulk actions. Two such statements that meet
in opposite orders deadlock, and Postgres aborts one of them (40P01): nothing it did remains, and
doing it again a moment later succeeds. So an operation runs its transaction through
:func:`retried`, and only a conflict that persists reaches the caller, as
:class:`~pgcourier.errors.Conflict` (the API answers 409, never 500).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from pgcourier.db import translate_errors
from pgcourier.errors import Conflict

T = TypeVar("T")

#: Tries in all; a conflict on the last one is raised.
TRIES = 4


async def retried(conn: asyncpg.Connection, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` in a transaction on ``conn`` (a savepoint inside the caller's), again after
    a short random pause when it ends in a deadlock or serialization failure."""
    for attempt in range(1, TRIES + 1):
        try:
            # (The transaction rolls back first, then the driver's error is translated.)
            with translate_errors():
                async with conn.transaction():
                    return await work()
        except Conflict:
            if attempt == TRIES:
                raise
            # Jittered, so that the two sides of a deadlock do not meet again in step.
            await asyncio.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
