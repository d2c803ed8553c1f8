"""aiohttp app factory for the admin server.

State lives under typed ``web.AppKey``s. Routes so far: ``/health`` (the process answers),
``/ready`` (database reachable, schema current, LISTEN connection up; 503 naming what is not)
and ``/metrics`` (Prometheus text format from the app's own registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pgcourier import db
from pgcourier.errors import PgCourierError
from pgcourier.metrics import Metrics


class ListenerState(Protocol):
    """What readiness needs to know about the LISTEN connection."""

    @property
    def connected(self) -> bool: ...


@dataclass(frozen=True)
class AdminContext:
    """Everything the routes use, wired by the composition root."""

    pool: asyncpg.Pool
    metrics: Metrics
    listener: ListenerState | None = None


CONTEXT = web.AppKey("context", AdminContext)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    reasons: list[str] = []
    try:
        with db.translate_errors():
            async with ctx.pool.acquire() as conn:
                version = await db.schema_version(conn)
        if version < db.LATEST_VERSION:
            reasons.append(
                f"schema at version {version}, needs {db.LATEST_VERSION}: run pgcourier migrate"
            )
    except PgCourierError as exc:
        reasons.append(f"database unreachable: {exc}")
    if ctx.listener is not None and not ctx.listener.connected:
        reasons.append("LISTEN connection down (reconnecting)")
    if reasons:
        return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    m = ctx.metrics
    if ctx.listener is not None:
        m.listener_connected.set(1 if ctx.listener.connected else 0)
    try:
        with db.translate_errors():
            row = await ctx.pool.fetchrow(db.QUERIES["delivery_gauges"])
    except PgCourierError:
        row = None  # serve what the process knows; the database gauges keep their last value
    if row is not None:
        m.pending_deliveries.set(row["pending"])
        m.dead_letters.set(row["dead"])
        m.oldest_pending_age.set(row["oldest_pending_age"] or 0.0)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(context: AdminContext) -> web.Application:
    """The admin application, ready for ``web.AppRunner`` or ``aiohttp_client``."""
    app = web.Application(client_max_size=1024 * 1024)
    app[CONTEXT] = context
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
