"""What a relay (or an admin server) checks before it works: the schema's version, the keys.

With AUTO_MIGRATE=false the schema is `pgcourier migrate`'s job, and a process may start before
it ran (a new version deployed before its migration, or a fresh database). Run on an older
schema, this code would fail on every function and column the schema lacks, one statement at a
time, and keep running degraded (0018 missing: never marked idle, every event waits for the
poll); the start-up check of the stored secrets could even write to it (encrypting plain
secrets under constraints an older schema still has). So nothing reads or writes the courier
schema before its version is this code's: the relay waits, says so in the log now and then
and in /ready, and starts on its own once migrated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import structlog

from pgcourier import db
from pgcourier.errors import ConfigurationError
from pgcourier.sealing import Keyring
from pgcourier.secrets_at_rest import secure_at_start
from pgcourier.tasks import log_failure

log = structlog.get_logger("pgcourier.startup")
T = TypeVar("T")


async def check_start(pool: asyncpg.Pool, keyring: Keyring | None) -> int | None:
    """The schema's version when it is older than this code (nothing else read or written);
    else None once the stored secrets open with the configured keys (or there are no keys and
    none is encrypted, with one warning), or a ConfigurationError. A schema newer than this
    code gets a warning: older code meets one for the length of every rolling deploy."""
    with db.translate_errors():
        async with pool.acquire() as conn:
            version = await db.schema_version(conn)
            if version < db.LATEST_VERSION:
                return version
            if version > db.LATEST_VERSION:
                log.warning(
                    "the courier schema is newer than this pgcourier: replace this process "
                    "with the new version (migrate first, then replace, is the upgrade order)",
                    schema_version=version,
                    knows_up_to=db.LATEST_VERSION,
                )
            await secure_at_start(conn, keyring)
    return None


async def until_checked(
    pool: asyncpg.Pool,
    keyring: Keyring | None,
    stop: asyncio.Event,
    *,
    interval: float = 1.0,
    remind: float = 30.0,
) -> bool:
    """Repeat :func:`check_start` every ``interval`` until it passes (True) or ``stop`` is set
    (False, at once, even mid-query: a database host that stopped answering would hold a stop
    for the command timeout). A ConfigurationError ends the wait; every other fault is waited
    out (the relay never exits for one). One log line every ``remind`` seconds meanwhile."""
    loop = asyncio.get_running_loop()
    told_at: float | None = None
    while not stop.is_set():
        failure: Exception | None = None
        behind: int | None = None
        try:
            behind = await unless_stopped(check_start(pool, keyring), stop)
        except ConfigurationError:
            raise
        except Exception as exc:
            failure = exc
        else:
            if stop.is_set():
                return False  # (unless_stopped's None; a check that passed as it came: moot)
            if behind is None:
                if told_at is not None:
                    log.info("schema migrated: starting")
                return True
        if told_at is None or loop.time() - told_at >= remind:
            told_at = loop.time()
            if failure is None:
                log.warning(
                    "waiting for the schema: run `pgcourier migrate` (nothing is delivered "
                    "until then)",
                    schema_version=behind,
                    needs=db.LATEST_VERSION,
                )
            else:
                log_failure("could not check the schema and the stored secrets; retrying", failure)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return False


async def unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``aw``'s result, or None as soon as ``stop`` is set (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            # Its outcome is of no interest now; retrieve it so that none is reported unseen.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if not task.done():
        return None
    return task.result()
