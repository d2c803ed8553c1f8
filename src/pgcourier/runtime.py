"""Composition root: wires asyncpg, aiohttp and the relay together, and owns shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from pgcourier import db, ops, pools
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.delivery import Transport, WebhookTransport, new_session
from pgcourier.delivery_reqwest import PinnedClients, ReqwestTransport
from pgcourier.errors import ConfigurationError, DatabaseUnavailable
from pgcourier.listener import Listener
from pgcourier.metrics import Metrics
from pgcourier.relay import Relay, RelayConfig
from pgcourier.retention import Pruner, RetentionConfig
from pgcourier.sealing import Unsealer
from pgcourier.secrets_at_rest import secure
from pgcourier.settings import Settings
from pgcourier.slack import Router, SlackTransport
from pgcourier.startup import check_start, until_checked
from pgcourier.store import CircuitConfig, PgStore
from pgcourier.tasks import supervised
from pgcourier.unopened import UnopenedSecrets

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
        retry_after_cap=settings.retry_after_cap,
    )


def webhook_transport(
    settings: Settings, session: aiohttp.ClientSession, clients: PinnedClients | None
) -> Transport:
    """The webhook transport PGCOURIER_HTTP_CLIENT names: reqwest through ``clients``, or
    aiohttp through ``session``; the same timeouts and body limit either way."""
    # Half the lease caps an endpoint's timeout: a slow request never outlives its lease.
    timeout, cap = settings.delivery_timeout, settings.lease / 2
    limit = settings.response_body_limit
    if clients is not None:
        return ReqwestTransport(
            clients, timeout=timeout, response_body_limit=limit, max_timeout=cap
        )
    return WebhookTransport(session, timeout=timeout, response_body_limit=limit, max_timeout=cap)


def retention_config(settings: Settings) -> RetentionConfig:
    """What the background pruner keeps, from the settings."""
    return RetentionConfig(retention=settings.retention, dead_retention=settings.dead_retention)


def circuit_config(settings: Settings) -> CircuitConfig:
    """Circuit breaking and automatic disabling, from the settings."""
    return CircuitConfig(
        failures=settings.circuit_failures,
        cooldown=settings.circuit_cooldown,
        max_cooldown=settings.circuit_max_cooldown,
        disable_after=settings.disable_after or None,
    )


async def prepare_schema(dsn: str, settings: Settings) -> list[int]:
    """Apply migrations and push database-enforced settings; return the versions applied."""
    async with pools.connection(dsn) as conn:
        with db.translate_errors():
            applied = await db.migrate(conn)
            await conn.execute(db.QUERIES["set_max_payload_bytes"], settings.max_payload_bytes)
        await ops.apply_event_types_mode(conn, settings.event_types)
        await ops.manage_default_slack(
            conn,
            enabled=settings.slack_bot_token is not None,
            channel=settings.slack_default_channel,
            api_url=settings.slack_api_url,
            keyring=settings.keyring,
        )
        # With a key, plain secrets left from before are encrypted now (idempotent).
        await secure(conn, settings.keyring)
    return applied


@dataclass
class Runtime:
    """A running relay and its listener, for callers (CLI, demo, tests) that need handles."""

    relay: Relay
    listener: Listener
    pool: asyncpg.Pool
    stop: asyncio.Event
    metrics: Metrics
    admin_port: int | None = None
    claim_pool: asyncpg.Pool | None = None  # the claims' own (asynchronous commits)


@contextlib.asynccontextmanager
async def running(settings: Settings, dsn: str) -> AsyncIterator[Runtime]:
    """Start a relay and its listener; on exit stop them, drain, and close everything."""
    pool = await pools.create_pool(
        dsn, min_size=2, max_size=4, synchronous_commit=settings.relay_synchronous_commit
    )
    # Claims (and the fan-out) commit without waiting for their WAL flush, always: a claim
    # lost to a Postgres crash is only done again (the events are the producers' commits, and
    # a lost lease means the delivery is sent again, same webhook-id), while waiting for the
    # flush put one more fsync between every commit and its delivery (measured here: a claim
    # of one event 1.1 ms instead of 3.6-4.0 ms on a busy disk). A later synchronous commit
    # (a completion) flushes the WAL up to itself, so no outcome is ever durable before the
    # claim it came from. Attempts and outcomes keep RELAY_SYNCHRONOUS_COMMIT. One connection:
    # the claim loop makes one round trip at a time; opened at the first claim (min_size 0), so
    # creating it cannot fail.
    claim_pool = await pools.create_pool(dsn, min_size=0, max_size=1, synchronous_commit=False)
    # Slack calls always go through the aiohttp session; webhooks too unless reqwest is chosen.
    session = new_session(
        max_in_flight=settings.max_in_flight, allowed_networks=settings.allowed_networks
    )
    clients = (
        PinnedClients(
            max_in_flight=settings.max_in_flight, allowed_networks=settings.allowed_networks
        )
        if settings.http_client == "reqwest"
        else None
    )
    stop = asyncio.Event()
    keyring = settings.keyring
    store: PgStore | None = None
    try:
        # A database fault here is waited out like everywhere else (the relay never exits for
        # one: issue 10); a key that opens nothing is a configuration error and ends the start.
        # A schema older than this code is waited for (pgcourier.startup): the listener and the
        # admin server start (/ready says why it is not ready), the relay once it is migrated.
        while True:
            try:
                behind = await check_start(pool, keyring)
                break
            except DatabaseUnavailable as exc:
                log.warning("could not check the stored secrets; retrying", error=str(exc))
                await asyncio.sleep(1.0)
        transport = Router(
            webhook_transport(settings, session, clients),
            SlackTransport(
                session,
                token=settings.slack_bot_token.get_secret_value()
                if settings.slack_bot_token
                else None,
                api_url=settings.slack_api_url,
                timeout=settings.delivery_timeout,
                response_body_limit=settings.response_body_limit,
            ),
        )
        metrics = Metrics(per_endpoint=settings.metrics_endpoint_labels)
        unopened = UnopenedSecrets()  # the store notes them, /ready reports them
        store = PgStore(
            pool,
            circuit_config(settings),
            max_claims=settings.max_claims,
            unsealer=Unsealer(keyring),
            claim_pool=claim_pool,
            unopened=unopened,
            idle_settle=settings.idle_settle_timeout,
        )
        relay = Relay(
            store=store,
            transport=transport,
            config=relay_config(settings),
            metrics=metrics,
        )
        listener = Listener(dsn, relay.notify)
        admin, admin_port = await _start_admin(
            settings, admin_context(settings, pool, metrics, listener, unopened)
        )
        try:
            async with asyncio.TaskGroup() as group:
                # The listener handles every fault itself; the supervisor is the last line of
                # defence, so that nothing it raises can end the TaskGroup and the process.
                group.create_task(
                    supervised("listener", lambda: listener.run(stop), retry_interval=1.0),
                    name="pgcourier-listener",
                )

                async def work() -> None:
                    # The relay and the pruner run this code's SQL: not before the schema has
                    # this code's version (the listener and the admin server need no schema).
                    if behind is not None and not await until_checked(pool, keyring, stop):
                        return
                    group.create_task(relay.run(stop), name="pgcourier-relay")
                    if settings.retention > 0:
                        pruner = Pruner(dsn, retention_config(settings), metrics)
                        group.create_task(
                            supervised("pruner", lambda: pruner.run(stop), retry_interval=5.0),
                            name="pgcourier-pruner",
                        )

                group.create_task(work(), name="pgcourier-start")
                try:
                    yield Runtime(
                        relay=relay,
                        listener=listener,
                        pool=pool,
                        stop=stop,
                        metrics=metrics,
                        admin_port=admin_port,
                        claim_pool=claim_pool,
                    )
                finally:
                    stop.set()
        except* ConfigurationError as refused:
            # Only the start-up check deferred to a migration raises one in the group (a key
            # that opens nothing, found once migrated): the same one error as at start.
            raise refused.exceptions[0] from None
        finally:
            if admin is not None:
                await admin.cleanup()
    finally:
        if store is not None:
            await store.close()  # its queue vacuum, if one runs: before the pools close
        await session.close()
        await pools.close_pool(claim_pool, grace=Relay.SHUTDOWN_GRACE)
        if clients is not None:
            await clients.close()
        await pools.close_pool(pool, grace=Relay.SHUTDOWN_GRACE)


def admin_context(
    settings: Settings,
    pool: asyncpg.Pool,
    metrics: Metrics,
    listener: Listener | None,
    unopened: UnopenedSecrets | None = None,
) -> AdminContext:
    """What the admin routes need, from the settings."""
    return AdminContext(
        pool=pool,
        metrics=metrics,
        listener=listener,
        token=settings.admin_token_value,
        # JSON-escaping can double a payload; keep at least 1 MiB for everything else.
        max_body=max(1024 * 1024, 2 * settings.max_payload_bytes + 64 * 1024),
        open_operations=settings.admin_open_operations,
        ui_enabled=settings.ui_enabled,
        keyring=settings.keyring,
        unopened_secrets=unopened,
    )


async def _start_admin(
    settings: Settings, context: AdminContext
) -> tuple[web.AppRunner | None, int | None]:
    """Bind the admin server when enabled; return its runner and the port it got."""
    if not settings.admin_enabled:
        return None, None
    runner = web.AppRunner(create_app(context), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.admin_host, settings.admin_port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigurationError(
            f"cannot serve the admin API on {settings.admin_host}:{settings.admin_port}: {exc}"
        ) from exc
    port = int(runner.addresses[0][1])
    log.info("admin server listening", host=settings.admin_host, port=port)
    return runner, port


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


async def serve_admin(settings: Settings, dsn: str) -> None:
    """Serve the admin API alone (no relay) until SIGTERM or SIGINT.

    For hosts that only answer operators: the database gauges in /metrics are live, the relay's
    own counters stay at zero, and /ready does not wait for a LISTEN connection.
    """
    if not settings.admin_enabled:
        raise ConfigurationError("PGCOURIER_ADMIN_ENABLED is false: nothing to serve")
    pool = await pools.create_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await check_start(pool, settings.keyring)  # (an older schema: /ready says so)
        admin, _port = await _start_admin(settings, admin_context(settings, pool, Metrics(), None))
        assert admin is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await admin.cleanup()
    finally:
        await pools.close_pool(pool, grace=Relay.SHUTDOWN_GRACE)
