"""aiohttp app factory for the admin server.

State lives under a typed ``web.AppKey``. Open routes: ``/health`` (the process answers),
``/ready`` (database reachable, schema current, LISTEN connection up; 503 naming what is not),
``/metrics`` (Prometheus text format from the app's own registry) and ``/openapi.json``.
``/api/v1`` routes live in :mod:`pgcourier.admin.api` behind a bearer token; the operator
console under ``/ui/`` in :mod:`pgcourier.admin.ui` (the same token, through a login form).

Defences, one middleware each: without a token, only this machine's own clients are served
(Host and Origin must be loopback names); with one, the bearer token; always, bodies must be
declared JSON, so that no HTML form or ``text/plain`` fetch from another site can write.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from pgcourier import db
from pgcourier.admin import api
from pgcourier.admin.context import CONTEXT, AdminContext
from pgcourier.admin.hosts import loopback_authority, loopback_origin
from pgcourier.admin.ui import PREFIX as UI_PREFIX
from pgcourier.admin.ui import create_console
from pgcourier.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound, PgCourierError
from pgcourier.sealing import SecretUnavailable

log = structlog.get_logger("pgcourier.admin")


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one error shape of the API: {"error": {"code", "message", "field"}}."""
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


#: What a caller is told when a write is refused because the server's keys do not fit.
SECRET_KEY_MISMATCH = (
    "the server's PGCOURIER_SECRET_KEY does not open the stored secrets: nothing was written; "
    "the operator must set the key they were encrypted with"
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
    except Conflict as exc:
        # A deadlock or serialization failure the operation's own retries did not get past:
        # nothing was changed, and the same request can be made again.
        log.warning("admin request: concurrent conflict", path=request.path, error=str(exc))
        response = error_response(
            409, "conflict", "a concurrent operation got in the way; nothing changed, try again"
        )
        response.headers["Retry-After"] = "1"
        return response
    except DatabaseUnavailable as exc:
        # The driver's message names the database's host, port and user: for the log only.
        log.warning("admin request: database unavailable", path=request.path, error=str(exc))
        return error_response(503, "unavailable", "database unavailable")
    except SecretUnavailable as exc:
        # This server's keys do not fit the stored secrets (seal_for_writing refused before
        # writing): the operator must fix the server's setting, the caller can only retry.
        log.error("admin request refused: secret key mismatch", path=request.path, error=str(exc))
        return error_response(503, "secret_key_mismatch", SECRET_KEY_MISMATCH)
    except PgCourierError as exc:
        log.error("admin request failed", path=request.path, error=str(exc))
        return error_response(500, "internal", "internal error")
    except Exception:
        log.exception("admin request crashed", path=request.path)
        return error_response(500, "internal", "internal error")


OPERATIONS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without a token, serve only this machine's own tools and pages.

    The server then binds loopback, but a browser on this machine is a way in: a page can POST
    to 127.0.0.1 (CSRF, seen in the Origin header) or rebind its own name to 127.0.0.1 and then
    read and write as a same-origin page (DNS rebinding, seen in the Host header). With a token
    neither works: a browser cannot add the Authorization header cross-site without a CORS
    preflight, which this server never grants.

    /health is left out: it only says "ok", changes nothing, and probes call it by any name.
    """
    if request.app[CONTEXT].has_token or request.path == "/health":
        return await handler(request)
    # Browsers always send Host; a request without one is a tool on this machine.
    host = request.headers.get(hdrs.HOST)
    if host is not None and not loopback_authority(host):
        return error_response(
            403,
            "forbidden",
            "without PGCOURIER_ADMIN_TOKEN only localhost, 127.0.0.1 or [::1] may be used as Host",
            "host",
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and not loopback_origin(origin):
        return error_response(
            403,
            "forbidden",
            "without PGCOURIER_ADMIN_TOKEN requests from other sites are refused",
            "origin",
        )
    return await handler(request)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/api/v1 needs ``Authorization: Bearer <PGCOURIER_ADMIN_TOKEN>`` when a token is set (and
    so do the operations routes when they are not configured open)."""
    ctx = request.app[CONTEXT]
    guarded = request.path.startswith("/api/") or (
        not ctx.open_operations and request.path in OPERATIONS
    )
    token = ctx.token if ctx.has_token else None  # the one rule for "a token is set"
    if token is not None and guarded:
        offered = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = offered.partition(" ")
        value = value.strip()
        # aiohttp hands bytes that are not UTF-8 over as surrogate escapes, which cannot be
        # encoded; the token is ASCII (see the settings), so anything else is simply wrong.
        if (
            scheme.lower() != "bearer"
            or not value.isascii()
            or not hmac.compare_digest(value, token)
        ):
            return error_response(401, "unauthorized", "missing or wrong bearer token")
    return await handler(request)


BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})


@web.middleware
async def json_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body must say it is JSON (UTF-8), token or not.

    The body would parse as JSON whatever its declared type, and a page on another site can
    send text/plain or a form without a CORS preflight: requiring application/json means any
    cross-site write needs a preflight, which this server never grants. With a token, requests
    without a body (e.g. a replay with the defaults) need no content type: the bearer header
    already forces a preflight. Without one they do, on the API: a bodiless cross-site POST
    needs no preflight either, and "replay every dead letter" or "rotate this secret" take no
    body (the Origin check refuses such requests too; this does not rely on browsers sending it).
    """
    ctx = request.app[CONTEXT]
    bodiless_write = not ctx.has_token and request.path.startswith("/api/")
    if (
        request.method in BODY_METHODS
        and (request.body_exists or bodiless_write)
        # The console's forms are HTML forms by nature; they carry CSRF tokens instead, and its
        # cookie is SameSite=Strict (see pgcourier.admin.ui.auth).
        and not request.path.startswith(f"{UI_PREFIX}/")
    ):
        charset = (request.charset or "utf-8").lower()
        if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
            return error_response(
                415,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
                "content-type",
            )
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
        # A probe's answer may be seen by more people than the log: the driver's message
        # (host, port, user) goes to the log only.
        log.warning("readiness: database unreachable", error=str(exc))
        reasons.append("database unreachable")
    if ctx.listener is not None and not ctx.listener.connected:
        reasons.append("LISTEN connection down (reconnecting)")
    if ctx.unopened_secrets is not None and len(ctx.unopened_secrets):
        # Generic on purpose: the log names the endpoints; a probe's answer names no secret.
        reasons.append(
            "PGCOURIER_SECRET_KEY does not open some endpoints' stored secrets: their "
            "deliveries are handed back (see the log)"
        )
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
    try:
        with db.translate_errors():
            # Catalog lookups only (retention, issue 12): whether the tables stay bounded.
            sizes = await ctx.pool.fetch(db.QUERIES["table_sizes"])
    except PgCourierError:
        sizes = []
    for size in sizes:
        m.table_bytes.labels(size["name"]).set(size["bytes"])
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(api.openapi_document())


async def console_home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(f"{UI_PREFIX}/")


def create_app(context: AdminContext) -> web.Application:
    """The admin application, ready for ``web.AppRunner`` or ``aiohttp_client``."""
    app = web.Application(
        client_max_size=context.max_body,
        middlewares=[json_errors, loopback_only, bearer_auth, json_bodies],
    )
    app[CONTEXT] = context
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    api.add_routes(app)
    if context.ui_enabled:
        app.router.add_get(UI_PREFIX, console_home)
        app.add_subapp(f"{UI_PREFIX}/", create_console(context))
    return app
