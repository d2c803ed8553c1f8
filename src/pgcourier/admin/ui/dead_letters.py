"""Dead-letter pages: filter, then replay or discard one, a selection, or all that match, each
through a confirmation page that says how many."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from yarl import URL

from pgcourier import ops
from pgcourier.admin.ui.render import (
    PREFIX,
    connection,
    dead_filter,
    first,
    form,
    query_text,
    render,
)
from pgcourier.errors import InvalidInput

PAGE = 50
ACTIONS = ("replay", "discard")
FILTER_FIELDS = ("endpoint_id", "event_type", "tenant", "since", "until")


def _filter_values(values: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name in FILTER_FIELDS:
        value = values.get(name, "")
        if isinstance(value, str) and value.strip():
            out[name] = value.strip()
    return out


async def list_page(request: web.Request) -> web.StreamResponse:
    where = dead_filter(request.query)
    async with connection(request) as conn:
        page = await ops.list_dead(conn, where, cursor=query_text(request, "cursor"), limit=PAGE)
        endpoints = await ops.list_endpoints(conn)
    return render(
        request,
        "dead_letters.html",
        {"page": page, "search": _filter_values(request.query), "endpoints": endpoints},
    )


def _action(value: str | None) -> str:
    if value not in ACTIONS:
        raise InvalidInput("action must be replay or discard", field="action")
    return value


async def confirm_page(request: web.Request) -> web.StreamResponse:
    """What a button asks for, and how many dead letters it covers, before anything changes."""
    action = _action(request.query.get("action"))
    search = _filter_values(request.query)
    where = dead_filter(request.query)
    ids: list[int] | None = None
    if request.query.get("scope") == "matching":
        async with connection(request) as conn:
            count = await ops.console.count_dead(conn, where)
    else:
        ids = ops.console.dead_ids(request.query.getall("id", []))
        count = len(ids)
    return render(
        request,
        "confirm.html",
        {"action": action, "ids": ids, "count": count, "search": search},
    )


async def apply(request: web.Request) -> web.StreamResponse:
    """Replay or discard: the ids posted, or (scope=matching) every dead letter the posted
    filter matches now."""
    action = request.match_info["action"]
    fields = await form(request)
    where_values = {name: first(fields, name) or "" for name in FILTER_FIELDS}
    ids: list[int] | None = None
    if first(fields, "scope") == "matching":
        where = dead_filter(where_values)
    else:
        ids = ops.console.dead_ids(fields.get("id", []))
        where = None
    async with connection(request) as conn:
        done: list[Any]
        if action == "replay":
            done = await ops.replay_dead(conn, ids, where)
        else:
            done = await ops.discard_many(conn, ids, where)
    back = str(URL(f"{PREFIX}/dead-letters").with_query(_filter_values(where_values)))
    return render(
        request,
        "done.html",
        {"action": action, "count": len(done), "asked": ids, "back": back},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dead-letters", list_page)
    app.router.add_get("/dead-letters/confirm", confirm_page)
    app.router.add_post("/dead-letters/{action:replay|discard}", apply)
