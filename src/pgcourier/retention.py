"""Retention (issue 12): finished events and old dead letters are pruned in small batches.

What goes, and when:

* an event whose every delivery is finished (delivered or discarded, in the history) or that
  matched no endpoint, with its history rows and attempts, once older than ``retention``;
* a dead letter with its attempts once dead for ``dead_retention``, and its event when nothing
  refers to it any more;
* never a delivery in the queue (pending, leased, waiting for a retry), never an event not fanned
  out yet. ``retention = 0`` turns pruning off altogether (dead letters are kept too);
  ``dead_retention = 0`` keeps dead letters until they are replayed or discarded.

How: one pass at a time across every relay and ``pgcourier prune``, under a session advisory
lock taken with ``pg_try_advisory_lock(PRUNE_LOCK_KEY)`` (a pass that finds it taken does
nothing: another is running). A pass is a sequence of batches of ``batch`` rows, each one short
transaction that deletes only rows no hot statement locks (sql/queries/retention.sql says why
that cannot race a replay or a completion into a half state), with a pause between batches.

* The outbox is walked in (created_at, id) order from where the last pass stopped (kept in
  courier.retention) up to now - retention: each event is looked at once in the common case.
* Events held when walked (a pending delivery, a dead letter, not fanned out yet) are recorded in
  courier.retention_held with when to look at them again (migration 0012): a pass looks only at
  those due, so its cost follows what may have become prunable, not how much is held. Held by
  dead letters: due when one of them leaves (a trigger), else after ``dead_park``; held by pending
  work: after as long again as it has been held, between ``recheck_after`` and ``recheck_cap``.
* Dead letters are walked by ``dead_letters_dead_at`` up to now - dead_retention.

Batched DELETEs rather than time partitions: see migration 0011 for the measurement.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from pgcourier import pools
from pgcourier.db import QUERIES, translate_errors
from pgcourier.metrics import Metrics
from pgcourier.tasks import first, log_failure

log = structlog.get_logger("pgcourier.retention")

# pg_try_advisory_lock's single-bigint key space is apart from the two-integer keys of
# courier.claim (1668247919, ...); "pgcprune" in ASCII. Documented in the README.
PRUNE_LOCK_KEY = 0x70_67_63_70_72_75_6E_65
TABLES = ("outbox", "delivery_history", "attempts", "dead_letters")
_NIL = uuid.UUID(int=0)
# The pause between batches (a seam for the test of the pacing).
_sleep = asyncio.sleep


@dataclass
class PruneResult:
    """What one pass removed (or, dry, would remove), per table."""

    dry_run: bool = False
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    #: True when the pass stopped at its batch cap with more to do: run the next one at once.
    more: bool = False
    events_before: datetime | None = None
    dead_before: datetime | None = None

    def add(self, row: asyncpg.Record | dict[str, Any]) -> None:
        for table in TABLES:
            if row.get(table):
                self.removed[table] += int(row[table])

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            ("would_remove" if self.dry_run else "removed"): dict(self.removed),
            "events_before": self.events_before,
            "dead_letters_before": self.dead_before,
            "batches": self.batches,
            "more": self.more,
        }


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Pruning settings; see :class:`pgcourier.settings.Settings` (0 keeps forever)."""

    retention: float
    dead_retention: float
    #: Events (or dead letters) per batch. 100 rather than 500 (issue 12's soak, 1,000 events/s
    #: on 18): producers' commits while a batch ran were p50 +11 % and p99 +0.9 ms against the
    #: rest, where batches of 500 cost them +17 % and +1.6-1.9 ms; pruning kept up either way.
    batch: int = 100
    #: Batches of the outbox walk and of the dead-letter walk per pass (each); more waits for
    #: the next pass, which then comes at once.
    max_batches: int = 1000
    #: Held events (pending work, not fanned out) are looked at again after as long as they have
    #: been held, at least this (None: the pass interval) and at most ``recheck_cap`` seconds.
    recheck_after: float | None = None
    recheck_cap: float = 3600.0
    #: Events held by dead letters only are woken when a letter leaves; by the clock only after
    #: this (a backstop; see migration 0012).
    dead_park: float = 86400.0
    #: Pause between batches, so that a long pass leaves the database to the hot path: at least
    #: ``pause`` seconds, and ``pace`` times as long as the batch took (pace 1: a pass works at
    #: most half the time, its load spread out rather than in a burst; see _after_batch).
    pause: float = 0.01
    pace: float = 1.0

    @property
    def interval(self) -> float:
        """Seconds between passes: a minute, or a tenth of a short retention (tests, soak)."""
        return min(60.0, max(0.5, self.retention / 10))


async def prune_pass(
    conn: asyncpg.Connection, config: RetentionConfig, *, dry_run: bool = False
) -> PruneResult | None:
    """One pass on ``conn`` (which must not be in a transaction); None when another pass holds
    the lock or retention is off."""
    if config.retention <= 0:
        return None
    with translate_errors():
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_KEY):
            return None
        try:
            return await _Pass(conn, config, dry_run).run()
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_KEY)


class _Pass:
    def __init__(self, conn: asyncpg.Connection, config: RetentionConfig, dry_run: bool) -> None:
        self.conn = conn
        self.config = config
        self.result = PruneResult(dry_run=dry_run)
        self._loop = asyncio.get_running_loop()
        self._batch_began = self._loop.time()

    async def run(self) -> PruneResult:
        conn, config = self.conn, self.config
        state = await conn.fetchrow(QUERIES["retention_state"])
        now: datetime = await conn.fetchval("SELECT now()")
        self.events_before = now - timedelta(seconds=config.retention)
        self.result.events_before = self.events_before
        self.walk = (state["events_at"] or _min_time(now), state["events_id"] or _NIL)
        await self._walk_events()
        if config.dead_retention > 0:
            self.result.dead_before = now - timedelta(seconds=config.dead_retention)
            await self._prune_dead(self.result.dead_before)
        # Last: the letters just pruned have woken their events (migration 0012's trigger).
        await self._recheck_events()
        return self.result

    async def _walk_events(self) -> None:
        """The outbox from where the last pass stopped up to the retention horizon."""
        for _ in range(self.config.max_batches):
            walked = await self._events_batch(self.walk, (self.events_before, _NIL))
            if walked < self.config.batch:
                return
        self.result.more = True

    async def _recheck_events(self) -> None:
        """Held events due for another look (courier.retention_held): pruned once finished,
        parked again otherwise."""
        config = self.config
        after: tuple[datetime, uuid.UUID] = (_min_time(self.events_before), _NIL)
        soonest = config.interval if config.recheck_after is None else config.recheck_after
        due_by: datetime = await self.conn.fetchval("SELECT now()")
        for _ in range(config.max_batches):
            async with self.conn.transaction():
                due = await self.conn.fetch(QUERIES["lock_due_held"], config.batch, *after, due_by)
                if not due:
                    return
                after = (due[-1]["check_at"], due[-1]["event_id"])
                row = await self.conn.fetchrow(
                    QUERIES["recheck_held"],
                    [r["event_id"] for r in due],
                    not self.result.dry_run,
                    soonest,
                    max(soonest, config.recheck_cap),
                    config.dead_park,
                )
                self.result.add(row)
                await self._save(row["max_delivery_id"])
            await self._after_batch()
            if len(due) < config.batch:
                return
        self.result.more = True

    async def _events_batch(
        self, after: tuple[datetime, uuid.UUID], before: tuple[datetime, uuid.UUID]
    ) -> int:
        dry = self.result.dry_run
        args = (*after, *before, not dry, self.config.batch)
        async with self.conn.transaction():
            row = await self.conn.fetchrow(QUERIES["prune_events"], *args)
            if row["walked"]:
                self.walk = (row["last_at"], row["last_id"])
            self.result.add(row)
            if not dry:
                await self._save(row["max_delivery_id"])
        await self._after_batch()
        return int(row["walked"])

    async def _prune_dead(self, dead_before: datetime) -> None:
        after: tuple[datetime, int] = (_min_time(dead_before), 0)
        for _ in range(self.config.max_batches):
            # A dry run deletes and rolls back: dead letters are few, and the counts are then
            # exactly what a real pass would remove (the walk's key keeps it from looping).
            tx = self.conn.transaction()
            await tx.start()
            try:
                row = await self.conn.fetchrow(
                    QUERIES["prune_dead"], *after, dead_before, self.config.batch
                )
                self.result.add(row)
                top = row["max_delivery_id"]
                if row["event_ids"]:
                    events = await self.conn.fetchrow(
                        QUERIES["prune_orphaned_events"], row["event_ids"], self.events_before
                    )
                    self.result.add(events)
                    top = max(top or 0, events["max_delivery_id"] or 0) or None
                if row["walked"]:
                    after = (row["last_at"], row["last_id"])
                if not self.result.dry_run:
                    await self._save(top, dead_before=dead_before)
            except BaseException:
                await tx.rollback()
                raise
            if self.result.dry_run:
                await tx.rollback()
            else:
                await tx.commit()
            await self._after_batch()
            if row["walked"] < self.config.batch:
                return
        self.result.more = True

    async def _save(self, max_delivery_id: int | None, dead_before: datetime | None = None) -> None:
        if self.result.dry_run:
            return
        await self.conn.execute(
            QUERIES["record_retention"],
            self.config.retention,
            self.config.dead_retention or None,
            *self.walk,
            None,  # (recheck_at, recheck_id: unused since migration 0012)
            None,
            dead_before,
            max_delivery_id,
        )

    async def _after_batch(self) -> None:
        """Count the batch and pause before the next one.

        The pause grows with the batch's own time: a batch slowed by a busy server waits longer
        before the next, and a pass never works more than 1 / (1 + pace) of its time. On a busy
        server the hot path then meets pruning in short, spaced slices rather than a burst of
        back-to-back batches (issue 12's soak: producers' commits while a batch ran).
        """
        self.result.batches += 1
        took = self._loop.time() - self._batch_began
        pause = max(self.config.pause, took * self.config.pace)
        if pause > 0:
            await _sleep(pause)
        self._batch_began = self._loop.time()


def _min_time(like: datetime) -> datetime:
    """The earliest time (a stand-in for -infinity: asyncpg maps it to datetime.min), aware."""
    return datetime.min.replace(tzinfo=like.tzinfo)


class Pruner:
    """The relay's background pruning task: a pass every :attr:`RetentionConfig.interval`
    seconds (at once again while a pass stops at its cap), on a connection of its own so that it
    never holds one of the hot path's pooled connections."""

    #: Seconds a stop waits for a cut-short pass to close its connection.
    CLOSE_GRACE = 1.0

    def __init__(self, dsn: str, config: RetentionConfig, metrics: Metrics) -> None:
        self._dsn = dsn
        self._config = config
        self._metrics = metrics
        self._conn: asyncpg.Connection | None = None  # the pass's connection, while one runs

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Stopping cancels a pass between or inside batches: each batch is one transaction,
            # so what is cut short rolls back whole, and the next pass resumes from its record.
            current = asyncio.ensure_future(self._guarded_once())
            await first(stop.wait(), current)
            # (Cancelled by first() when stopping: let it close its connection before we return,
            # within a grace: a database host that stopped answering never acknowledges a close,
            # so past the grace the connection is dropped where it stands.)
            _, late = await asyncio.wait({current}, timeout=self.CLOSE_GRACE)
            if late and self._conn is not None:
                self._conn.terminate()
                await asyncio.wait({current})
            more = not current.cancelled() and current.result()
            if not more:
                await first(stop.wait(), asyncio.sleep(self._config.interval))

    async def _guarded_once(self) -> bool:
        try:
            return await self.run_once()
        except Exception as exc:  # the next pass tries again; cancellation stops us
            log_failure("pruning pass failed; trying again later", exc)
            return False

    async def run_once(self) -> bool:
        """One pass; True when it stopped with more to do."""
        async with pools.connection(self._dsn) as conn:
            self._conn = conn
            with translate_errors():
                # A batch lost in a crash is only pruned again (its progress row goes with it).
                await conn.execute("SET synchronous_commit = off")
            result = await prune_pass(conn, self._config)
        if result is None:
            return False
        record(self._metrics, result)
        if any(result.removed.values()):
            log.info("pruned", **result.removed, batches=result.batches, more=result.more)
        return result.more


def record(metrics: Metrics, result: PruneResult) -> None:
    """Count what a (real) pass removed in ``pgcourier_pruned_rows_total``."""
    if result.dry_run:
        return
    for table, n in result.removed.items():
        if n:
            metrics.pruned_rows.labels(table).inc(n)


def format_duration(seconds: float) -> str:
    """``2592000`` -> ``"30d"``, ``90`` -> ``"90s"``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and math.isclose(seconds % size, 0, abs_tol=1e-9):
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
