"""Small helpers for the relay's long-running asyncio tasks: waiting on the first of several
things, and keeping a task alive through whatever the database layer raises.

The relay must exit only when told to (issue 10 item 4). A database restart surfaces as many
kinds of exception, some of them from the driver's internals and not translated at the storage
boundary; any of them escaping a task of the relay's TaskGroup would cancel every other task and
end the process. So each long-running task expects the usual faults (``PgCourierError``, logged as
a warning), survives the unexpected ones (logged as an error with the traceback: a bug must stay
visible), backs off and carries on. Cancellation is never caught: it is how the relay stops.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from pgcourier.errors import PgCourierError

log = structlog.get_logger("pgcourier.relay")


async def first(*aws: Any) -> None:
    """Wait until the first of several awaitables finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def log_failure(message: str, exc: Exception, **fields: Any) -> None:
    """Log a failed step of a long-running task that will be tried again.

    ``PgCourierError`` is the expected kind (the database is down, restarting, refusing): a
    warning with its message. Anything else is a bug or a driver fault nobody translated yet: an
    error with the exception's type and a plain traceback (never a renderer's view of the
    frames' locals, which hold secrets and tokens).
    """
    if isinstance(exc, PgCourierError):
        log.warning(message, error=str(exc), **fields)
    else:
        log.error(
            message,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
            **fields,
        )


async def supervised(
    name: str, body: Callable[[], Awaitable[None]], *, retry_interval: float
) -> None:
    """Run ``body()`` until it returns; after any exception but cancellation, log it, wait
    ``retry_interval`` and run it again.

    The last line of defence around a task of a TaskGroup: the loops inside handle their own
    expected failures, so a restart here means something unforeseen happened, and it is logged
    as such.
    """
    while True:
        try:
            await body()
            return
        except Exception as exc:  # not BaseException: CancelledError must stop us
            log_failure(f"{name} failed; restarting it", exc, task=name)
        await asyncio.sleep(retry_interval)
