"""aiohttp app factory for the admin server.

State lives under a typed ``web.AppKey``. Open routes: ``/health`` (the process answers),
``/ready`` (database reachable, schema current, LISTEN connection up; 503 naming what is not)
and ``/metrics`` (Prometheus text format from the app's own registry). ``/api/v1`` routes live in
:mod:`pgcourier.admin.api` behind a bearer token.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from pgcourier import db
from pgcourier.admin import api
from pgcourier.admin.context import CONTEXT, AdminContext
from pgcourier.errors import DatabaseUnavailable, InvalidInput, NotFound, PgCourierError

log = structlog.get_logger("pgcourier.admin")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one error shape of the API: {"error": {"code", "message", "field"}}."""
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error; nothing leaks a traceback."""
    try:
        return await handler(request)
    except InvalidInput as exc:
        status = 400 if exc.field == "body" else 422
        return error_response(status, "invalid", exc.message, exc.field)
    except ValidationError as exc:
        first = exc.errors()[0]
        # e.g. "event_types.0" or "headers.X-Team"; pydantic's "[key]" marker adds nothing.
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "[key]") or None
        return error_response(422, "invalid", str(first.get("msg", "invalid")), field)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_") if exc.status != 404 else "not_found"
        response = error_response(exc.status, code, exc.reason)
        # Keep what the exception says beyond its body, e.g. Allow on a 405 (RFC 9110).
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except DatabaseUnavailable as exc:
        return error_response(503, "unavailable", f"database unavailable: {exc}")
    except PgCourierError as exc:
        log.error("admin request failed", path=request.path, error=str(exc))
        return error_response(500, "internal", "internal error")
    except Exception:
        log.exception("admin request crashed", path=request.path)
        return error_response(500, "internal", "internal error")


OPERATIONS = frozenset({"/health", "/ready", "/metrics"})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/api/v1 needs ``Authorization: Bearer <PGCOURIER_ADMIN_TOKEN>`` when a token is set (and
    so do the operations routes when they are not configured open)."""
    ctx = request.app[CONTEXT]
    token = ctx.token
    guarded = request.path.startswith("/api/") or (
        not ctx.open_operations and request.path in OPERATIONS
    )
    if token is not None and guarded:
        offered = request.headers.get("Authorization", "")
        scheme, _, value = offered.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return error_response(401, "unauthorized", "missing or wrong bearer token")
    return await handler(request)


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
        m.open_circuits.set(row["open_circuits"])
        m.oldest_pending_age.set(row["oldest_pending_age"] or 0.0)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(api.openapi_document())


def create_app(context: AdminContext) -> web.Application:
    """The admin application, ready for ``web.AppRunner`` or ``aiohttp_client``."""
    app = web.Application(client_max_size=context.max_body, middlewares=[json_errors, bearer_auth])
    app[CONTEXT] = context
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    api.add_routes(app)
    return app
