"""What every console page shares: the template environment, its filters, rendering with the
CSRF helper, a pooled connection, reading forms and queries, and HTML error pages."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import asyncpg
import jinja2
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from pgcourier import ops
from pgcourier.admin.context import CONTEXT, pooled_connection
from pgcourier.admin.ui.auth import CSRF_FIELD, Session, Signer
from pgcourier.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from pgcourier.sealing import SecretUnavailable

log = structlog.get_logger("pgcourier.console")

PREFIX = "/ui"
SIGNER = web.AppKey("console_signer", Signer)
SESSION = web.RequestKey("console_session", Session)
# Longest receiver-controlled text (a response body, an error, a payload) a page shows.
TEXT_CAP = 4000
# What a missing number reads as (an en dash).
NONE = "\u2013"


def as_utc(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if value is not None else None
    return datetime.fromisoformat(value).astimezone(UTC)


def time_tag(value: str | datetime | None) -> Markup:
    """``<time>`` in UTC; console.js rewrites the text into the browser's zone and keeps the UTC
    reading in the title, shown on hover."""
    when = as_utc(value)
    if when is None:
        return Markup("&ndash;")
    iso = when.isoformat().replace("+00:00", "Z")
    shown = f"{when:%Y-%m-%d %H:%M:%S} UTC"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, shown, shown)


def cap(value: Any, limit: int = TEXT_CAP) -> str:
    """Text cut to ``limit`` characters, saying how much was left out (escaped by the template)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit} more characters not shown)"


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        return value  # a payload kept as its JSON text (see ops.events.event_record)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def seconds(value: float | None) -> str:
    """An age as "3 h 2 min", "4 min 10 s" or "12 s"."""
    if value is None:
        return NONE
    total = int(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def milliseconds(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f} %"


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("pgcourier.admin.ui", "templates"),
        # Everything a receiver or a producer controls passes through the templates: escape
        # by default, and fail loudly on a misspelt variable instead of showing nothing.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        utc=time_tag, cap=cap, pretty_json=pretty_json, seconds=seconds, ms=milliseconds
    )
    env.filters["percent"] = percent
    env.globals["prefix"] = PREFIX
    env.globals["csrf_field"] = CSRF_FIELD


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """A page, with ``csrf(action)`` for its forms and whether a logout button makes sense."""
    session = request.get(SESSION)
    signer = request.config_dict[SIGNER]

    def csrf(action: str) -> Markup:
        token = signer.csrf(session, action) if session is not None else ""
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)

    values = {
        "csrf": csrf,
        "logged_in": request.config_dict[CONTEXT].has_token and session is not None,
        "path": request.path,
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, values, status=status)
    # Pages show operational data and sometimes a new secret: not for shared caches or history.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # base-uri and form-action do not fall back to default-src: name them.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    )
    return response


def error_page(
    request: web.Request, status: int, message: str, field: str | None = None
) -> web.Response:
    return render(
        request, "error.html", {"status": status, "message": message, "field": field}, status=status
    )


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (after a POST, the browser then GETs it)."""
    return web.Response(status=303, headers={"Location": location})


def connection(request: web.Request) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    """A pooled connection; not getting one is the database being unavailable (a 503 page)."""
    return pooled_connection(request.config_dict[CONTEXT].pool)


def query_text(request: web.Request, name: str) -> str | None:
    """A query parameter, None when absent or blank (an empty form field means "any")."""
    value = request.query.get(name, "").strip()
    return value or None


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = query_text(request, name)
    return None if raw is None else ops.parse_aware_time(raw, field=name)


def dead_filter(values: Mapping[str, str]) -> ops.DeadFilter:
    """The dead-letter filter in a query string or a form (blank fields: any)."""

    def text(name: str) -> str | None:
        value = values.get(name, "")
        return value.strip() or None if isinstance(value, str) else None

    since, until = text("since"), text("until")
    return ops.DeadFilter(
        endpoint_id=text("endpoint_id"),
        event_type=text("event_type"),
        since=None if since is None else ops.parse_aware_time(since, field="since"),
        until=None if until is None else ops.parse_aware_time(until, field="until"),
        tenant=text("tenant"),
    )


async def form(request: web.Request) -> dict[str, list[str]]:
    """A posted form's text fields (files are not expected and are ignored)."""
    data = await request.post()
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


def first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    value = values[0].strip() if values else ""
    return value or None


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure under /ui/ becomes a page saying what went wrong, never a traceback; bad
    input gets the operation's own message, as the API gives it."""
    try:
        return await handler(request)
    except InvalidInput as exc:
        return error_page(request, 400 if exc.field == "body" else 422, exc.message, exc.field)
    except NotFound as exc:
        return error_page(request, 404, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, exc.status, exc.reason)
    except Conflict as exc:
        log.warning("console: concurrent conflict", path=request.path, error=str(exc))
        return error_page(
            request, 409, "A concurrent operation got in the way; nothing changed, try again."
        )
    except DatabaseUnavailable as exc:
        log.warning("console: database unavailable", path=request.path, error=str(exc))
        return error_page(request, 503, "The database is unavailable; try again shortly.")
    except SecretUnavailable as exc:
        log.error("console: secret key mismatch", path=request.path, error=str(exc))
        return error_page(
            request,
            503,
            "The server's PGCOURIER_SECRET_KEY does not open the stored secrets: nothing was "
            "written. The operator must set the key they were encrypted with.",
        )
    except Exception:
        log.exception("console page crashed", path=request.path)
        return error_page(request, 500, "Internal error; the server log has the details.")
