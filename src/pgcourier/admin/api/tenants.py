"""``/api/v1/tenants``: what a tenant's endpoints receive, measured (tenants are not registered:
a tenant is a name events and endpoints carry)."""

from __future__ import annotations

from aiohttp import web

from pgcourier import ops
from pgcourier.admin.api.requests import connection
from pgcourier.admin.api.routing import Route


async def tenant_stats(request: web.Request) -> web.Response:
    window = ops.parse_window(request.query.get("window", "24h"))
    async with connection(request) as conn:
        stats = await ops.tenant_stats(conn, request.match_info["tenant"], window_seconds=window)
    return web.json_response(stats)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/v1/tenants/{tenant}/stats",
        tenant_stats,
        "A tenant's endpoints over a window: attempts, success rate, latency, pending and dead "
        "counts, and the events enqueued for it.",
        query=("window",),
        refusable="the window must be between 1s and 90d",
        notes=("A tenant that nothing carries has zero counts, not a 404.",),
    ),
)
