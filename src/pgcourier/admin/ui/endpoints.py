"""Endpoint pages: the list with each one's health, one endpoint's attempts, and its actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from yarl import URL

from pgcourier import ops
from pgcourier.admin.context import CONTEXT
from pgcourier.admin.ui.charts import minute_buckets, stacked_minutes
from pgcourier.admin.ui.render import (
    PREFIX,
    connection,
    first,
    form,
    query_text,
    render,
    see_other,
)
from pgcourier.errors import InvalidInput

WINDOWS = ("15m", "1h", "6h", "24h", "7d")
DETAIL_SPAN = 60
# What a redirect after an action may say; the query names one of these, never free text.
DONE = {
    "enabled": "Endpoint enabled: its held deliveries are due again.",
    "disabled": "Endpoint disabled: its deliveries are held until it is enabled.",
    "recovered": "Failed deliveries queued again.",
}


def _window(request: web.Request) -> tuple[str, int]:
    text = query_text(request, "window") or "1h"
    return text, ops.parse_window(text)


async def list_page(request: web.Request) -> web.StreamResponse:
    window_text, window = _window(request)
    tenant = query_text(request, "tenant")
    rows: list[dict[str, Any]] = []
    tenant_stats = None
    async with connection(request) as conn:
        for endpoint in await ops.list_endpoints(conn, tenant=tenant):
            stats = await ops.endpoint_stats(conn, endpoint["id"], window_seconds=window)
            rows.append({"endpoint": endpoint, "stats": stats})
        if tenant is not None:
            tenant_stats = await ops.tenant_stats(conn, tenant, window_seconds=window)
    return render(
        request,
        "endpoints.html",
        {
            "rows": rows,
            "window": window_text,
            "windows": WINDOWS,
            "tenant": tenant or "",
            "tenant_stats": tenant_stats,
        },
    )


async def detail_page(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    window_text, window = _window(request)
    async with connection(request) as conn:
        endpoint = await ops.get_endpoint(conn, endpoint_id)
        stats = await ops.endpoint_stats(conn, endpoint_id, window_seconds=window)
        attempts = await ops.console.endpoint_attempts(
            conn, endpoint_id, cursor=query_text(request, "cursor")
        )
        rows = await ops.console.minutes(conn, span=DETAIL_SPAN, endpoint_id=endpoint_id)
    chart = stacked_minutes(
        minute_buckets(rows, end=datetime.now(UTC), span=DETAIL_SPAN),
        width=760,
        title="This endpoint's attempts per minute over the last hour, by outcome",
    )
    done = DONE.get(request.query.get("done", ""))
    if done and request.query.get("count", "").isdecimal():
        done = f"{done} ({request.query['count']})"
    default_since = (datetime.now(UTC) - timedelta(hours=24)).replace(microsecond=0)
    return render(
        request,
        "endpoint.html",
        {
            "endpoint": endpoint,
            "stats": stats,
            "attempts": attempts,
            "chart": chart,
            "done": done,
            "window": window_text,
            "windows": WINDOWS,
            "default_since": default_since.isoformat().replace("+00:00", "Z"),
        },
    )


def _back(endpoint_id: str, **query: str) -> web.Response:
    return see_other(str(URL(f"{PREFIX}/endpoints/{endpoint_id}").with_query(query)))


async def enable(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    async with connection(request) as conn:
        await ops.set_endpoint_enabled(conn, endpoint_id, True)
    return _back(endpoint_id, done="enabled")


async def disable(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    reason = first(await form(request), "reason")
    if reason is not None and len(reason) > 500:
        raise InvalidInput("reason must be at most 500 characters", field="reason")
    async with connection(request) as conn:
        await ops.update_endpoint(
            conn,
            endpoint_id,
            {"enabled": False},
            reason=reason,
            keyring=request.config_dict[CONTEXT].keyring,
        )
    return _back(endpoint_id, done="disabled")


async def rotate(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    grace_text = first(await form(request), "grace_period_seconds") or str(
        ops.DEFAULT_GRACE_SECONDS
    )
    # isdecimal, not isdigit: "²" is a digit to Python but not a number int() reads.
    if not (grace_text.isascii() and grace_text.isdecimal()) or len(grace_text) > 9:
        raise InvalidInput(
            f"grace_period_seconds {grace_text!r} is not a whole number of seconds",
            field="grace_period_seconds",
        )
    async with connection(request) as conn:
        rotated = await ops.rotate_secret(
            conn,
            endpoint_id,
            grace_seconds=int(grace_text),
            keyring=request.config_dict[CONTEXT].keyring,
        )
    # The one page that shows a secret: no-store (see render), and not reachable again.
    return render(request, "secret.html", {"endpoint": rotated, "secret": rotated["secret"]})


async def recover(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    since_text = first(await form(request), "since")
    if since_text is None:
        raise InvalidInput("give since: the time from which to recover", field="since")
    since = ops.parse_aware_time(since_text, field="since")
    async with connection(request) as conn:
        queued = await ops.recover_endpoint(conn, endpoint_id, since=since)
    return _back(endpoint_id, done="recovered", count=str(len(queued)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/endpoints", list_page)
    app.router.add_get("/endpoints/{id}", detail_page)
    app.router.add_post("/endpoints/{id}/enable", enable)
    app.router.add_post("/endpoints/{id}/disable", disable)
    app.router.add_post("/endpoints/{id}/rotate", rotate)
    app.router.add_post("/endpoints/{id}/recover", recover)
    # POST /endpoints/{id}/test ("send a test event") is added by .test_sends.
