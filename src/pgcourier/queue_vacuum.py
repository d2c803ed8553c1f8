"""The relay's own vacuuming of ``courier.queue``: when autovacuum is off, late, or too slow for
the churn of a busy queue.

Every delivery leaves dead row versions in the queue (its lease is an update of an indexed
column, and a finished delivery is deleted). They cost every claim until a vacuum removes them,
so the relay looks at the table's dead rows at housekeeping, after every few thousand deliveries
it finishes, and after a large hold of an ordering key's deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from pgcourier.db import QUERIES, translate_errors

log = structlog.get_logger("pgcourier.queue_vacuum")

# The relay vacuums courier.queue itself past this many dead rows, when no vacuum ran on it for
# VACUUM_INTERVAL seconds (autovacuum's own threshold for the queue is 1,000: see 0006).
VACUUM_DEAD_ROWS = 10_000
VACUUM_INTERVAL = 60.0

# A completion whose keyed retries hold at least this many later deliveries vacuums the queue
# right after it commits (at most every HOLD_VACUUM_INTERVAL seconds): see after_completion.
HOLD_VACUUM_ROWS = 500
HOLD_VACUUM_INTERVAL = 5.0

# Under load the relay also checks after every CHURN_CHECK_ROWS deliveries it finishes, and
# vacuums the queue past that many dead rows if no vacuum ran in CHURN_VACUUM_INTERVAL seconds:
# housekeeping (every 10 s) and autovacuum (each database once a minute) let a drain leave tens
# of thousands of dead lease versions, and every claim's count of its endpoint's leased rows
# visits each of them (see QueueVacuum.after_completion).
CHURN_CHECK_ROWS = 5_000
CHURN_VACUUM_INTERVAL = 2.0


class QueueVacuum:
    """When to ``VACUUM courier.queue``, for one relay (its store owns it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._allowed = True  # false once the server refused: the relay stops trying
        self._finished_since_check = 0  # deliveries completed since the last churn check
        # The vacuum after_completion started, while it runs (one at a time); close() ends it.
        self._running: asyncio.Task[None] | None = None
        self._closed = False

    async def if_due(self, dead_rows: int | None = None, interval: float | None = None) -> None:
        """``VACUUM courier.queue`` when it holds many dead rows and no vacuum ran lately.

        Every delivery leaves a dead row in the queue. Autovacuum handles that (the table has
        thresholds of its own), but a server may run without it; the queue would then grow by
        every delivery ever made, and its plans with it. Only the table's owner vacuums it (the
        query checks); should the server refuse anyway, the relay says so once and stops trying.
        The thresholds default to the module's, read at call time (tests lower them).
        """
        if not self._allowed:
            return
        due = await self._pool.fetchval(
            QUERIES["queue_vacuum_due"],
            VACUUM_DEAD_ROWS if dead_rows is None else dead_rows,
            VACUUM_INTERVAL if interval is None else interval,
        )
        if not due:
            return
        try:
            # No arguments: asyncpg sends it as a simple query, outside any transaction.
            await self._pool.execute(QUERIES["vacuum_queue"])
        except asyncpg.InsufficientPrivilegeError as exc:
            self._allowed = False
            log.warning("cannot vacuum courier.queue; leaving it to autovacuum", error=str(exc))

    def after_completion(self, finished: int, moved: int) -> None:
        """Vacuum the queue when a committed batch left it enough dead rows to slow claims.

        After a hold (``moved`` keyed deliveries pushed back behind a retry): each moved delivery
        leaves its old version at the front of its endpoint's due order, where every claim's look
        for due work and every next-due probe starts: 2,000 of them made a claim of another
        endpoint's event 0.76 -> 1.61 ms on 15 (0.95 after a VACUUM), and a healthy endpoint's
        idle latency +1.4 ms beside a blocked key.

        After many finished deliveries: a claim counts each endpoint's leased rows (its
        max_in_flight) over due_at > now(), through an (endpoint_id, due_at) index where every
        lease taken in the last lease period left a version, live or not (the queue's due order
        until 0016, the leases' own index since; both hold every lease version). Planned as a
        bitmap scan, which never marks dead entries, the count visits them again on every claim
        until a vacuum removes them. On a drain of 50,000 events on 15 without autovacuum it
        reached 47,000 entries and 5.7 ms a claim (about half the claim's time); a VACUUM of
        such a queue takes ~30 ms.

        Autovacuum comes up to a minute later, or never. The check and the vacuum run in a task
        of their own, beside the completions: the outcomes are committed by now, and the next
        batch need not wait behind a vacuum (10-40 ms on 15 for 5,000 dead rows beside up to
        500,000 waiting retries; the completer used to await it). One at a time (each holds one
        of the pool's few connections, and a second VACUUM would skip the locked table anyway):
        while one runs, no other starts. The churn count goes on, so the first batch after it
        checks again; a hold's check is dropped, as one within HOLD_VACUUM_INTERVAL of the last
        vacuum always was. A failure is logged and changes nothing.
        """
        self._finished_since_check += finished
        if moved >= HOLD_VACUUM_ROWS:
            dead_rows, interval = -1, HOLD_VACUUM_INTERVAL
        elif self._finished_since_check >= CHURN_CHECK_ROWS:
            dead_rows, interval = CHURN_CHECK_ROWS, CHURN_VACUUM_INTERVAL
        else:
            return
        if self._closed or (self._running is not None and not self._running.done()):
            return
        self._finished_since_check = 0
        self._running = asyncio.create_task(
            self._vacuum_quietly(dead_rows, interval), name="pgcourier-queue-vacuum"
        )

    async def _vacuum_quietly(self, dead_rows: int, interval: float) -> None:
        try:
            with translate_errors():
                await self.if_due(dead_rows=dead_rows, interval=interval)
        except Exception as exc:
            log.warning("could not vacuum the queue", error=str(exc))

    async def wait(self) -> None:
        """Until the vacuum after_completion started (if any) has ended."""
        if self._running is not None:
            await asyncio.shield(self._running)

    async def close(self) -> None:
        """Stop the vacuum after_completion started, if one runs (the server cancels it: a
        vacuum cut short loses only its own work)."""
        self._closed = True
        task, self._running = self._running, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
