"""Retention as operators see it: one pruning pass on demand, and a "not found" that says when
retention may be why (issue 12).

An event id that is not found cannot be dated for sure (ids before migration 0015 are random):
what can be said honestly is that events are pruned after the retention period and how far
pruning has got (its horizon, kept in courier.retention). Delivery (dead-letter) ids come from
one sequence: an id at or below the highest one pruned that is found nowhere was pruned.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import NotFound, PgCourierError
from pgcourier.retention import TABLES, RetentionConfig, format_duration, prune_pass


class PruneBusy(PgCourierError):
    """Another pruning pass (a relay's, or another ``pgcourier prune``) holds the lock."""


async def prune(
    conn: asyncpg.Connection, *, retention: float, dead_retention: float, dry_run: bool = False
) -> dict[str, Any]:
    """One pass now: what it removed (or, dry, would remove) per table."""
    if retention <= 0:
        return {
            "dry_run": dry_run,
            ("would_remove" if dry_run else "removed"): dict.fromkeys(TABLES, 0),
            "note": "PGCOURIER_RETENTION is 0: retention is off and nothing is pruned",
        }
    # No pause between batches: an operator is waiting, and each batch is still its own short
    # transaction.
    config = RetentionConfig(retention=retention, dead_retention=dead_retention, pause=0, pace=0)
    result = await prune_pass(conn, config, dry_run=dry_run)
    if result is None:
        raise PruneBusy("another pruning pass is running (a relay's); try again in a moment")
    return result.as_dict()


async def event_not_found(conn: asyncpg.Connection, event_id: str) -> NotFound:
    """The NotFound for an event id found nowhere: it names retention when pruning has run."""
    with translate_errors():
        state = await conn.fetchrow(QUERIES["retention_state"])
    if state is None or state["events_at"] is None or not state["retention_seconds"]:
        return NotFound(f"no event {event_id}")
    period = format_duration(state["retention_seconds"])
    return NotFound(
        f"no event {event_id}: it does not exist or was pruned by retention (events are kept "
        f"{period} after they are created once every delivery has finished; those created "
        f"before {state['events_at'].isoformat()} have been pruned)"
    )


async def dead_letter_not_found(conn: asyncpg.Connection, dead_id: int) -> NotFound:
    """The NotFound for a dead-letter id: where the delivery went instead, if it still exists,
    or that retention pruned it."""
    with translate_errors():
        status = await conn.fetchval(QUERIES["delivery_whereabouts"], dead_id)
        state = await conn.fetchrow(QUERIES["retention_state"])
    if status is not None:
        return NotFound(f"no dead letter {dead_id}: delivery {dead_id} is {status} now")
    top = state["max_pruned_delivery_id"] if state is not None else None
    if top is not None and dead_id <= top:
        kept = []
        if state["dead_retention_seconds"]:
            kept.append(f"dead letters {format_duration(state['dead_retention_seconds'])}")
        if state["retention_seconds"]:
            kept.append(f"finished deliveries {format_duration(state['retention_seconds'])}")
        return NotFound(
            f"no dead letter {dead_id}: it was pruned by retention or never existed "
            f"(kept: {', '.join(kept)})"
        )
    return NotFound(f"no dead letter {dead_id}")
