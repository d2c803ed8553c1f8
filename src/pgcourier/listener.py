"""The dedicated LISTEN connection: reconnects, keeps itself alive, and wakes the relay.

Notifications are only a hint to look now; the relay's poll is the safety net. So whenever the
connection is (re)established the relay is woken too: anything notified while we were
disconnected is picked up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from pgcourier.db import NOTIFY_CHANNEL
from pgcourier.tasks import log_failure

log = structlog.get_logger("pgcourier.listener")


class Listener:
    """Owns one connection that LISTENs on ``courier_outbox`` for as long as :meth:`run` runs."""

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[], None],
        *,
        keepalive_interval: float = 5.0,
        keepalive_timeout: float = 5.0,
        # Short: after an outage the relay must hear NOTIFY again within seconds of the server
        # accepting connections, not at the end of a long backoff (one attempt a second costs
        # the server nothing).
        max_backoff: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0
        self.backend_pid: int | None = None

    def _notified(self, *_: Any) -> None:
        self._on_notify()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncio.wait_for(asyncpg.connect(self._dsn), timeout=10)
                assert conn is not None
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                self.backend_pid = conn.get_server_pid()
                self.connected = True
                backoff = 0.1
                log.info("listening", channel=NOTIFY_CHANNEL, reconnects=self.reconnects)
                self._on_notify()
                await self._keep_alive(conn, stop, lost)
            except Exception as exc:
                # Whatever the driver raises (OSError, PostgresError, InterfaceError, its
                # InternalClientError after a restart...), the answer is the same: reconnect. An
                # exception escaping here would end the relay process.
                if stop.is_set():
                    pass
                elif isinstance(exc, _CONNECTION_FAULTS):
                    log.warning("listener connection lost", error=f"{type(exc).__name__}: {exc}")
                else:  # a bug, or a driver fault not seen before: keep its traceback
                    log_failure("listener failed; reconnecting", exc)
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            if stop.is_set():
                return
            self.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _keep_alive(
        self, conn: asyncpg.Connection, stop: asyncio.Event, lost: asyncio.Event
    ) -> None:
        """Return when stopping; raise when the connection dies or stops answering."""
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self._keepalive_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waiters:
                    w.cancel()
            if stop.is_set():
                return
            if lost.is_set() or conn.is_closed():
                raise ConnectionError("the server closed the LISTEN connection")
            # A silent network drop shows up only when we ask something.
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self._keepalive_timeout)


# What a server going away, restarting or refusing looks like from the driver. ConnectionError and
# TimeoutError are OSErrors; InternalClientError is asyncpg's state machine tripping over a
# connection the server closed mid-operation.
_CONNECTION_FAULTS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    """A connection-termination callback that sets ``event``."""

    def callback(_conn: Any) -> None:
        event.set()

    return callback
