"""Every ``/api/v1`` route, one table per resource, and their registration."""

from __future__ import annotations

from aiohttp import web

from pgcourier.admin.api import dead_letters, endpoints, event_types, events, tenants, verify
from pgcourier.admin.api.routing import Route, known_query_only

ROUTES: tuple[Route, ...] = (
    *endpoints.ROUTES,
    *events.ROUTES,
    *dead_letters.ROUTES,
    *tenants.ROUTES,
    *verify.ROUTES,
    *event_types.ROUTES,
)


def add_routes(app: web.Application) -> None:
    """Register ROUTES on ``app``."""
    for route in ROUTES:
        app.router.add_route(route.method, route.router_path, known_query_only(route))
