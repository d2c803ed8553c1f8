"""How the relay's sessions are opened and kept: single connections, the pool, plan refresh.

Failures to connect come out as :mod:`pgcourier.errors`, through
:func:`pgcourier.db.translate_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog

from pgcourier.db import translate_errors

# Named as before the split from pgcourier.db, so the log lines read the same.
log = structlog.get_logger("pgcourier.db")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """Open one connection, translating failures into :class:`DatabaseUnavailable`."""
    with translate_errors():
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    return conn


@contextlib.asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A short-lived connection for CLI commands and tests."""
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


#: Seconds a relay session keeps its cached plans (see PlanRefresh).
PLAN_LIFETIME = 1.0


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    synchronous_commit: bool = True,
    plan_lifetime: float = PLAN_LIFETIME,
) -> asyncpg.Pool:
    """The relay's pool. Statement caching stays on: every hot query is a prepared statement.

    ``synchronous_commit=False`` applies to this pool's sessions only (the relay's bookkeeping),
    never to producers' transactions. Sessions drop their cached plans at most every
    ``plan_lifetime`` seconds (see :class:`PlanRefresh`).
    """
    with translate_errors():
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            server_settings={
                "synchronous_commit": "on" if synchronous_commit else "off",
                # No planner switches: every hot statement picks its plan from the shape of the
                # tables and queries (migration 0006), whatever the statistics say; the plan
                # tests (tests/integration/test_plans.py) hold each one to that.
                # jit = off is a safeguard, not a fix. enable_seqscan = off used to be set
                # here; before Postgres 18 a disabled path is priced by adding disable_cost
                # (1e10), which pushed these short statements past jit_above_cost, so a server
                # with JIT compiled each one on every call (measured on 15: 40-190 ms per
                # statement; idle latency 225 ms p50 instead of 4). Statements this short
                # never gain from JIT, and an estimate made without statistics must not be
                # able to bring it back. The admin API shares this pool and its paginated reads
                # are short too. Producers' sessions are theirs and are left alone.
                "jit": "off",
            },
            # asyncpg resets a session on every release (pg_advisory_unlock_all, CLOSE ALL,
            # UNLISTEN *, RESET ALL): one more round trip per pooled call, awaited before the
            # result is handed back, on the claim, every completion write and every API read.
            # Nothing on this pool leaves session state behind: locks are transaction-scoped
            # (pg_try_advisory_xact_lock), nothing LISTENs (the listener has its own
            # connection), declares a cursor or SETs outside a transaction. An open
            # transaction is still rolled back (asyncpg does that before calling ``reset``).
            reset=PlanRefresh(plan_lifetime).reset,
        )
    return pool


class PlanRefresh:
    """The pool's reset: nothing to undo, but plans older than ``lifetime`` are dropped.

    Postgres caches the plan of every prepared statement and of every statement inside a
    PL/pgSQL function (the claim, the fan-out) per session. After five executions it keeps one
    generic plan if that looks no dearer than planning each call, and keeps it until something
    invalidates it: an ANALYZE or VACUUM of a table it reads, DDL, DISCARD. A plan made while the
    queue and the outbox were nearly empty (a new install, a quiet hour, right after a TRUNCATE)
    rightly scans them sequentially, and on a server without autovacuum (or before its next
    pass) the session kept that plan while the tables grew: at a steady 2,000 events/s on 15 and
    18 the claim's backend burnt a core scanning the queue and the outbox once per claimed row,
    and the relay fell behind by seconds (issue 10). Planning each call instead (plan_cache_mode
    = force_custom_plan on the functions) keeps plans right but doubles the cost of every claim
    (0.75 -> 1.7 ms measured on 15). So plans get a short life: at most every ``lifetime``
    seconds a released session runs DISCARD PLANS, one round trip, and its next executions are
    planned afresh for the tables as they are now (2,000 events/s, commit -> receipt p50:
    6-8 s before, 7-8 ms after, on 15 and 18). No planner switch changes a cost.
    tests/integration/test_plan_refresh.py counts the claims' sequential scans. (The claim, the
    fan-out and the completion keep their generic plan between refreshes whatever it looks
    like beside a custom one: they set plan_cache_mode = force_generic_plan for themselves,
    migration 0021.)
    """

    def __init__(self, lifetime: float) -> None:
        self._lifetime = lifetime
        # Per connection: when its plans were last dropped (weak, so closed ones go away).
        self._since: weakref.WeakKeyDictionary[asyncpg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def reset(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        since = self._since.get(conn)
        if since is None:
            self._since[conn] = now
        elif now - since >= self._lifetime:
            self._since[conn] = now
            await conn.execute("DISCARD PLANS")


async def close_pool(pool: asyncpg.Pool, grace: float) -> None:
    """Close ``pool`` gracefully within ``grace`` seconds, then at once.

    A graceful close waits for every connection's release, and asyncpg shields releases from
    cancellation: with a database host that stopped answering that is command_timeout (60 s)
    or TCP's own give-up (minutes). Past ``grace`` every connection is closed where it stands.
    """
    closing = asyncio.ensure_future(pool.close())
    done, _ = await asyncio.wait({closing}, timeout=grace)
    if closing in done:
        closing.result()
        return
    log.warning("the database did not answer while closing; closing connections at once")
    pool.terminate()
    closing.cancel()
    # Retrieve the outcome of the abandoned graceful close, whatever it is (never awaited).
    closing.add_done_callback(lambda task: task.cancelled() or task.exception())
