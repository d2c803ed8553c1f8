"""Composition root: wires asyncpg, aiohttp and the relay together, and owns shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import structlog

from pgcourier import db
from pgcourier.delivery import WebhookTransport, new_session
from pgcourier.listener import Listener
from pgcourier.relay import Relay, RelayConfig
from pgcourier.settings import Settings
from pgcourier.store import PgStore

log = structlog.get_logger("pgcourier.runtime")


def relay_config(settings: Settings) -> RelayConfig:
    """The relay's tuning, taken from the settings."""
    return RelayConfig(
        poll_interval=settings.poll_interval,
        retry_schedule=settings.retry_delays,
        retry_jitter=settings.retry_jitter,
        max_in_flight=settings.max_in_flight,
        lease=settings.lease,
        shutdown_timeout=settings.shutdown_timeout,
        completion_flush_interval=settings.completion_flush_interval,
    )


async def prepare_schema(dsn: str, settings: Settings) -> list[int]:
    """Apply migrations and push database-enforced settings; return the versions applied."""
    async with db.connection(dsn) as conn:
        with db.translate_errors():
            applied = await db.migrate(conn)
            await conn.execute(db.QUERIES["set_max_payload_bytes"], settings.max_payload_bytes)
    return applied


@dataclass
class Runtime:
    """A running relay and its listener, for callers (CLI, demo, tests) that need handles."""

    relay: Relay
    listener: Listener
    pool: asyncpg.Pool
    stop: asyncio.Event


@contextlib.asynccontextmanager
async def running(settings: Settings, dsn: str) -> AsyncIterator[Runtime]:
    """Start a relay and its listener; on exit stop them, drain, and close everything."""
    pool = await db.create_pool(
        dsn, min_size=2, max_size=4, synchronous_commit=settings.relay_synchronous_commit
    )
    session = new_session(max_in_flight=settings.max_in_flight)
    stop = asyncio.Event()
    try:
        transport = WebhookTransport(
            session,
            timeout=settings.delivery_timeout,
            response_body_limit=settings.response_body_limit,
        )
        relay = Relay(store=PgStore(pool), transport=transport, config=relay_config(settings))
        listener = Listener(dsn, relay.notify)
        async with asyncio.TaskGroup() as group:
            group.create_task(listener.run(stop), name="pgcourier-listener")
            group.create_task(relay.run(stop), name="pgcourier-relay")
            try:
                yield Runtime(relay=relay, listener=listener, pool=pool, stop=stop)
            finally:
                stop.set()
    finally:
        await session.close()
        await pool.close()


async def serve(settings: Settings, dsn: str) -> None:
    """Run the relay until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    async with running(settings, dsn) as rt:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rt.stop.set)
        try:
            await rt.stop.wait()
            log.info("stopping: draining in-flight deliveries")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
