"""``/api/v1``: endpoints and dead letters over HTTP, on the same operations as the CLI.

Every body is validated by a pydantic model that forbids unknown fields; every failure becomes
``{"error": {"code", "message", "field"}}`` with a 4xx status (see :mod:`pgcourier.admin.app`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pgcourier import __version__, ops
from pgcourier.admin.context import CONTEXT
from pgcourier.errors import InvalidInput


class EndpointCreate(BaseModel):
    """POST /api/v1/endpoints"""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    event_types: Annotated[list[str], Field(min_length=1, max_length=64)]
    description: Annotated[str, Field(max_length=1000)] = ""
    secret: str | None = None


class EndpointUpdate(BaseModel):
    """PATCH /api/v1/endpoints/{id} (only ``enabled`` for now)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class EventCreate(BaseModel):
    """POST /api/v1/events: the same semantics as ``courier.enqueue``."""

    model_config = ConfigDict(extra="forbid")

    event_type: Annotated[str, Field(min_length=1, max_length=200)]
    payload: dict[str, Any]
    ordering_key: str | None = None
    idempotency_key: str | None = None


class ReplayRequest(BaseModel):
    """POST /api/v1/dead-letters/replay"""

    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[int], Field(max_length=10_000)] | None = None


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    """The request's JSON body parsed into ``model`` (errors become 400/422 JSON)."""
    if request.body_exists:
        try:
            data = await request.json()
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from exc
    else:
        data = {}
    return model.model_validate(data)


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    return None if raw is None else ops.parse_aware_time(raw, field=name)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError as exc:
        raise InvalidInput(f"limit {raw!r} is not a whole number", field="limit") from exc
    return limit


async def create_endpoint(request: web.Request) -> web.Response:
    body: EndpointCreate = await _body(request, EndpointCreate)
    async with request.app[CONTEXT].pool.acquire() as conn:
        created = await ops.create_endpoint(
            conn,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            secret=body.secret,
        )
    return web.json_response(created, status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        return web.json_response({"data": await ops.list_endpoints(conn)})


async def get_endpoint(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        return web.json_response(await ops.get_endpoint(conn, request.match_info["id"]))


async def update_endpoint(request: web.Request) -> web.Response:
    body: EndpointUpdate = await _body(request, EndpointUpdate)
    async with request.app[CONTEXT].pool.acquire() as conn:
        updated = await ops.set_endpoint_enabled(conn, request.match_info["id"], body.enabled)
    return web.json_response(updated)


async def create_event(request: web.Request) -> web.Response:
    body: EventCreate = await _body(request, EventCreate)
    async with request.app[CONTEXT].pool.acquire() as conn:
        event_id = await ops.enqueue(
            conn,
            body.event_type,
            body.payload,
            ordering_key=body.ordering_key,
            idempotency_key=body.idempotency_key,
        )
    return web.json_response({"id": str(event_id)}, status=201)


async def list_events(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        page = await ops.list_events(
            conn,
            event_type=request.query.get("type"),
            since=_time(request, "since"),
            until=_time(request, "until"),
            cursor=request.query.get("cursor"),
            limit=_limit(request),
        )
    return web.json_response(page)


async def get_event(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        return web.json_response(await ops.get_event(conn, request.match_info["id"]))


async def get_event_attempts(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        attempts = await ops.event_attempts(conn, request.match_info["id"])
    return web.json_response({"data": attempts})


async def list_dead_letters(request: web.Request) -> web.Response:
    async with request.app[CONTEXT].pool.acquire() as conn:
        return web.json_response({"data": await ops.list_dead(conn, limit=_limit(request))})


async def replay_dead_letter(request: web.Request) -> web.Response:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise InvalidInput(f"{raw!r} is not a dead-letter id", field="id")
    async with request.app[CONTEXT].pool.acquire() as conn:
        queued = await ops.replay_dead(conn, [int(raw)])
    if not queued:
        raise web.HTTPNotFound(reason=f"no dead letter {raw}")
    return web.json_response({"replayed": queued})


async def replay_dead_letters(request: web.Request) -> web.Response:
    body: ReplayRequest = await _body(request, ReplayRequest)
    async with request.app[CONTEXT].pool.acquire() as conn:
        queued = await ops.replay_dead(conn, body.ids)
    return web.json_response({"replayed": queued, "count": len(queued)})


@dataclass(frozen=True)
class Route:
    """One API route: what registers it and what documents it, so the two cannot drift."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()
    status: int = 200


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/endpoints",
        create_endpoint,
        "Register an endpoint; the response holds its secret, shown only this once.",
        EndpointCreate,
        status=201,
    ),
    Route("GET", "/api/v1/endpoints", list_endpoints, "List endpoints (never their secrets)."),
    Route("GET", "/api/v1/endpoints/{id}", get_endpoint, "One endpoint."),
    Route(
        "PATCH",
        "/api/v1/endpoints/{id}",
        update_endpoint,
        "Enable or disable an endpoint (disabled: deliveries are held).",
        EndpointUpdate,
    ),
    Route(
        "POST",
        "/api/v1/events",
        create_event,
        "Enqueue an event, with courier.enqueue's semantics.",
        EventCreate,
        status=201,
    ),
    Route(
        "GET",
        "/api/v1/events",
        list_events,
        "Events, newest first, keyset-paginated.",
        query=("type", "since", "until", "limit", "cursor"),
    ),
    Route(
        "GET",
        "/api/v1/events/{id}",
        get_event,
        "One event and its delivery status at each endpoint.",
    ),
    Route(
        "GET",
        "/api/v1/events/{id}/attempts",
        get_event_attempts,
        "Every attempt made for one event.",
    ),
    Route(
        "GET",
        "/api/v1/dead-letters",
        list_dead_letters,
        "Dead deliveries, newest first.",
        query=("limit",),
    ),
    Route(
        "POST",
        "/api/v1/dead-letters/replay",
        replay_dead_letters,
        "Queue dead deliveries again (all, or the given ids); replaying twice queues once.",
        ReplayRequest,
    ),
    Route(
        "POST",
        "/api/v1/dead-letters/{id}/replay",
        replay_dead_letter,
        "Queue one dead delivery again, with the same webhook-id.",
    ),
)

_REF = "#/components/schemas/"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for /api/v1, built from ROUTES and the pydantic request models."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    error = {"content": {"application/json": {"schema": {"$ref": _REF + "Error"}}}}
    for route in ROUTES:
        parameters: list[dict[str, Any]] = (
            [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
            if "{id}" in route.path
            else []
        )
        parameters += [
            {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
            for q in route.query
        ]
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                str(route.status): {"description": "Success"},
                "4XX": {"description": "The request was refused; nothing was changed.", **error},
            },
        }
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            name = route.body.__name__
            schemas[name] = route.body.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            operation["requestBody"] = {
                "required": False,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "pgcourier admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def add_routes(app: web.Application) -> None:
    """Register ROUTES on ``app``."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
