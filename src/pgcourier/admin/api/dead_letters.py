"""``/api/v1/dead-letters``: list, show, replay and discard dead deliveries."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from pgcourier import ops
from pgcourier.admin.api.fields import STRICT, DeadId, EventType, Tenant
from pgcourier.admin.api.requests import connection, query_limit, query_time, read_body
from pgcourier.admin.api.routing import (
    CURSOR_REFUSAL,
    DEAD_FILTERS,
    PAGED,
    PAYLOAD_TEXT,
    RANGE,
    Route,
)
from pgcourier.errors import InvalidInput


class ReplayRequest(BaseModel):
    """POST /api/v1/dead-letters/replay: the given ids, or every dead letter matching the filters
    (all of them when none is given)."""

    model_config = STRICT

    ids: (
        Annotated[
            list[DeadId],
            Field(min_length=1, max_length=10_000),
        ]
        | None
    ) = None
    endpoint_id: UUID | None = None
    event_type: EventType | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    tenant: Tenant | None = Field(default=None, description="the events' tenant")


def _dead_filter(request: web.Request) -> ops.DeadFilter:
    return ops.DeadFilter(
        endpoint_id=request.query.get("endpoint_id"),
        event_type=request.query.get("event_type"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        tenant=request.query.get("tenant"),
    )


async def list_dead_letters(request: web.Request) -> web.Response:
    where = _dead_filter(request)
    async with connection(request) as conn:
        page = await ops.list_dead(
            conn, where, cursor=request.query.get("cursor"), limit=query_limit(request)
        )
    return web.json_response(page)


async def get_dead_letter(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response(await ops.get_dead(conn, request.match_info["id"]))


async def discard_dead_letter(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        discarded = await ops.discard_dead(conn, request.match_info["id"])
    return web.json_response({"discarded": discarded})


async def replay_dead_letter(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        dead = await ops.get_dead(conn, request.match_info["id"])
        queued = await ops.replay_dead(conn, [dead["id"]])
    return web.json_response({"replayed": queued, "count": len(queued)})


async def replay_dead_letters(request: web.Request) -> web.Response:
    body = await read_body(request, ReplayRequest)
    where = ops.DeadFilter(
        endpoint_id=str(body.endpoint_id) if body.endpoint_id else None,
        event_type=body.event_type,
        since=body.since,
        until=body.until,
        tenant=body.tenant,
    )
    if body.ids is not None and where != ops.DeadFilter():
        raise InvalidInput("give either ids or filters, not both", field="ids")
    async with connection(request) as conn:
        queued = await ops.replay_dead(conn, body.ids, where)
    return web.json_response({"replayed": queued, "count": len(queued)})


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/v1/dead-letters",
        list_dead_letters,
        "Dead deliveries, newest first, keyset-paginated.",
        query=(*DEAD_FILTERS, "limit", "cursor"),
        refusable=f"{RANGE}; {CURSOR_REFUSAL}",
        notes=(PAGED,),
    ),
    Route(
        "POST",
        "/api/v1/dead-letters/replay",
        replay_dead_letters,
        "Queue dead deliveries again (ids, or all matching the filters); twice queues once.",
        ReplayRequest,
        refusable=f"give ids or filters, not both; {RANGE}",
    ),
    Route(
        "GET",
        "/api/v1/dead-letters/{id}",
        get_dead_letter,
        "One dead letter and its event.",
        notes=(PAYLOAD_TEXT,),
    ),
    Route(
        "DELETE",
        "/api/v1/dead-letters/{id}",
        discard_dead_letter,
        "Discard a dead letter for good (recorded as discarded).",
    ),
    Route(
        "POST",
        "/api/v1/dead-letters/{id}/replay",
        replay_dead_letter,
        "Queue one dead delivery again, with the same webhook-id.",
    ),
)
