"""``/api/v1/events``: enqueue events and read them with their attempts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, Field

from pgcourier import ops
from pgcourier.admin.api.fields import STRICT, EventType, Key, Tenant
from pgcourier.admin.api.requests import connection, query_limit, query_time, read_body
from pgcourier.admin.api.routing import CURSOR_REFUSAL, PAGED, PAYLOAD_TEXT, RANGE, Route


class EventCreate(BaseModel):
    """POST /api/v1/events: the same semantics as ``courier.enqueue``."""

    model_config = STRICT

    event_type: EventType
    payload: dict[str, Any]
    ordering_key: Key | None = None
    idempotency_key: Key | None = None
    tenant: Tenant | None = Field(
        default=None,
        description="only this tenant's endpoints (and those without a tenant) receive it; "
        "idempotency and ordering keys are per tenant",
    )
    endpoint_id: UUID | None = Field(
        default=None,
        description="only this endpoint receives it, whatever its patterns; a tenant given too "
        "must be the endpoint's",
    )


async def create_event(request: web.Request) -> web.Response:
    body = await read_body(request, EventCreate)
    async with connection(request) as conn:
        # The catalog's schema for this type, when one is registered (422 naming the path).
        await ops.check_payload(conn, body.event_type, body.payload)
        event_id = await ops.enqueue(
            conn,
            body.event_type,
            body.payload,
            ordering_key=body.ordering_key,
            idempotency_key=body.idempotency_key,
            tenant=body.tenant,
            endpoint_id=body.endpoint_id,
        )
    return web.json_response({"id": str(event_id)}, status=201)


async def list_events(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        page = await ops.list_events(
            conn,
            event_type=request.query.get("type"),
            since=query_time(request, "since"),
            until=query_time(request, "until"),
            cursor=request.query.get("cursor"),
            limit=query_limit(request),
            tenant=request.query.get("tenant"),
        )
    return web.json_response(page)


async def get_event(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response(await ops.get_event(conn, request.match_info["id"]))


async def get_event_attempts(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        page = await ops.list_attempts(
            conn,
            request.match_info["id"],
            cursor=request.query.get("cursor"),
            limit=query_limit(request),
        )
    return web.json_response(page)


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/events",
        create_event,
        "Enqueue an event, with courier.enqueue's semantics.",
        EventCreate,
        status=201,
        refusable="the payload must fit the size limit and hold no NUL character (\\u0000), and "
        "match its type's schema in the catalog (the field names the path, e.g. payload.amount); "
        "with PGCOURIER_EVENT_TYPES=strict the type must be registered; endpoint_id must be an "
        "endpoint (not deleted) of the tenant given",
    ),
    Route(
        "GET",
        "/api/v1/events",
        list_events,
        "Events, newest first, keyset-paginated.",
        query=("type", "since", "until", "limit", "cursor", "tenant"),
        refusable=f"{RANGE}; {CURSOR_REFUSAL}",
        notes=(PAGED, PAYLOAD_TEXT),
    ),
    Route(
        "GET",
        "/api/v1/events/{id}",
        get_event,
        "One event and its delivery status at each endpoint.",
        notes=(PAYLOAD_TEXT,),
    ),
    Route(
        "GET",
        "/api/v1/events/{id}/attempts",
        get_event_attempts,
        "The attempts made for one event, oldest first, keyset-paginated.",
        query=("limit", "cursor"),
        refusable=CURSOR_REFUSAL,
        notes=(PAGED,),
    ),
)
