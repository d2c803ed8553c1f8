"""Event pages: search by type, tenant, time range or id, and one event with every attempt."""

from __future__ import annotations

from aiohttp import web

from pgcourier import ops
from pgcourier.admin.ui.render import PREFIX, connection, query_text, query_time, render

ATTEMPTS_PAGE = 100

PAGE = 50


async def list_page(request: web.Request) -> web.StreamResponse:
    wanted = query_text(request, "id")
    if wanted is not None:
        # Searching by id is going to the event's page (a malformed id is a 422 there too).
        event_id = ops.parse_uuid(wanted, field="id")
        raise web.HTTPSeeOther(f"{PREFIX}/events/{event_id}")
    event_type = query_text(request, "type")
    tenant = query_text(request, "tenant")
    since, until = query_time(request, "since"), query_time(request, "until")
    async with connection(request) as conn:
        page = await ops.list_events(
            conn,
            event_type=event_type,
            since=since,
            until=until,
            cursor=query_text(request, "cursor"),
            limit=PAGE,
            tenant=tenant,
        )
    search = {
        "type": event_type or "",
        "tenant": tenant or "",
        "since": query_text(request, "since") or "",
        "until": query_text(request, "until") or "",
    }
    return render(request, "events.html", {"page": page, "search": search})


async def detail_page(request: web.Request) -> web.StreamResponse:
    event_id = request.match_info["id"]
    async with connection(request) as conn:
        event = await ops.get_event(conn, event_id)
        # A page at a time, bounded by rows and bytes like the API's (issue 15: memory bounds).
        attempts = await ops.list_attempts(
            conn, event_id, cursor=query_text(request, "cursor"), limit=ATTEMPTS_PAGE
        )
        endpoints = {e["id"]: e for e in await ops.list_endpoints(conn)}
    return render(
        request,
        "event.html",
        {
            "event": event,
            "attempts": attempts["data"],
            "next_cursor": attempts["next_cursor"],
            "endpoints": endpoints,
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/events", list_page)
    app.router.add_get("/events/{id}", detail_page)
