"""``/api/v1``: endpoints, events and dead letters over HTTP, on the same operations as the CLI.

Every body is validated by a pydantic model that forbids unknown fields; every failure becomes
``{"error": {"code", "message", "field"}}`` with a 4xx status (see :mod:`pgcourier.admin.app`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pgcourier import __version__, ops, patterns
from pgcourier.admin.context import CONTEXT, pooled_connection
from pgcourier.errors import InvalidInput

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_ID = ops.MAX_ID


def _whole(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; strict pydantic would not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Every constraint the operations check is stated here too, so that the OpenAPI document (built
# from these models) describes exactly what is accepted.
HeaderName = Annotated[str, Field(pattern=ops.HEADER_NAME.pattern)]
HeaderValue = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]
Headers = Annotated[dict[HeaderName, HeaderValue], Field(max_length=20)]
Timeout = Annotated[float, Field(ge=1, le=300)]
Pattern = Annotated[str, Field(pattern=patterns.PATTERN_RE.pattern)]
Patterns = Annotated[list[Pattern], Field(min_length=1, max_length=patterns.MAX_PATTERNS)]
Url = Annotated[str, Field(max_length=ops.MAX_URL, pattern=ops.URL_PATTERN)]
Description = Annotated[str, Field(max_length=1000)]
# whsec_ for the standard scheme (checked against the scheme: see the routes' notes).
Secret = Annotated[str, Field(pattern=ops.RAW_SECRET_PATTERN)]
Scheme = Literal["standard", "github", "timestamped-hex", "stripe-style"]
Status = Annotated[int, Field(ge=300, le=599), BeforeValidator(_whole)]
Statuses = Annotated[list[Status], Field(max_length=100)]
MaxInFlight = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_whole)]
RateLimit = Annotated[float, Field(gt=0, le=10_000)]
EventType = Annotated[str, Field(pattern=patterns.EVENT_TYPE_RE.pattern)]
Key = Annotated[str, Field(min_length=1, max_length=255)]


# (The bounds before the validator: the other way round, pydantic documents them as "ge"/"le".)
GraceSeconds = Annotated[int, Field(ge=0, le=ops.MAX_GRACE_SECONDS), BeforeValidator(_whole)]
DeadId = Annotated[int, Field(ge=1, le=ops.MAX_ID), BeforeValidator(_whole)]
# Strict: a JSON API takes true, not "yes"; 5, not "5".
STRICT = ConfigDict(extra="forbid", strict=True)


SlackChannel = Annotated[str, Field(pattern=ops.SLACK_CHANNEL_PATTERN)]
SlackToken = Annotated[
    str, Field(pattern=ops.SLACK_TOKEN_PATTERN, json_schema_extra={"writeOnly": True})
]
Template = Annotated[str, Field(max_length=3000)]


class EndpointCreate(BaseModel):
    """POST /api/v1/endpoints"""

    model_config = STRICT

    kind: Literal["webhook", "slack"] = "webhook"
    url: Url | None = Field(default=None, description="required for webhooks")
    event_types: Patterns
    description: Description = ""
    secret: Secret | None = Field(
        default=None, description="a whsec_ secret; generated when absent, returned only once"
    )
    enabled: bool = True
    timeout_seconds: Timeout | None = Field(
        default=None, description="request timeout; the relay's default when absent"
    )
    headers: Headers = Field(default_factory=dict, description="custom headers sent each time")
    signature_scheme: Scheme = "standard"
    permanent_statuses: Statuses = Field(
        default_factory=list, description="statuses that dead-letter at once, e.g. [400, 404]"
    )
    max_in_flight: MaxInFlight = Field(
        default=10, description="most concurrent requests to it, across every relay"
    )
    rate_limit: RateLimit | None = Field(
        default=None, description="most requests per second to it, across every relay"
    )
    slack_channel: SlackChannel | None = Field(default=None, description="required for Slack")
    slack_token: SlackToken | None = Field(
        default=None, description="this endpoint's bot token; never returned"
    )
    template: Template | None = Field(
        default=None, description="message text with {data.field} placeholders (Slack)"
    )


NULLABLE = frozenset({"timeout_seconds", "rate_limit", "template"})


def _not_null_except_timeout(schema: dict[str, Any]) -> None:
    # Only timeout_seconds and rate_limit may be null (the relay's default, no limit); absent
    # means unchanged.
    for name, prop in schema["properties"].items():
        if name not in NULLABLE and "anyOf" in prop:
            [kept] = [s for s in prop.pop("anyOf") if s.get("type") != "null"]
            prop.pop("default", None)
            prop.update(kept)
    schema["minProperties"] = 1


class EndpointUpdate(BaseModel):
    """PATCH /api/v1/endpoints/{id}: the fields given change, the others stay."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=_not_null_except_timeout
    )

    url: Url | None = None
    event_types: Patterns | None = None
    description: Description | None = None
    enabled: bool | None = None
    timeout_seconds: Timeout | None = None
    headers: Headers | None = Field(
        default=None,
        description=f"replaces every custom header; a value of {ops.HEADER_MASK!r} (as read "
        "back) keeps that header's stored value",
    )
    signature_scheme: Scheme | None = None
    permanent_statuses: Statuses | None = None
    max_in_flight: MaxInFlight | None = None
    rate_limit: RateLimit | None = None
    slack_channel: SlackChannel | None = None
    slack_token: SlackToken | None = None
    template: Template | None = None


class RotateSecret(BaseModel):
    """POST /api/v1/endpoints/{id}/rotate-secret"""

    model_config = STRICT

    secret: Secret | None = Field(default=None, description="the new secret; generated when absent")
    grace_period_seconds: GraceSeconds = Field(
        default=ops.DEFAULT_GRACE_SECONDS,
        description="how long the old secret keeps signing beside the new one",
    )


class RecoverRequest(BaseModel):
    """POST /api/v1/endpoints/{id}/recover"""

    model_config = STRICT

    since: AwareDatetime


class EventCreate(BaseModel):
    """POST /api/v1/events: the same semantics as ``courier.enqueue``."""

    model_config = STRICT

    event_type: EventType
    payload: dict[str, Any]
    ordering_key: Key | None = None
    idempotency_key: Key | None = None


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


async def _body(request: web.Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body parsed into ``model`` (errors become 400/422 JSON)."""
    raw = await request.read() if request.body_exists else b""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" or not first.get("loc"):
            raise InvalidInput(
                f"the body must be a JSON object: {first['msg']}", field="body"
            ) from exc
        raise


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


def _conn(request: web.Request) -> contextlib.AbstractAsyncContextManager[Any]:
    """A pooled connection for this request (see :func:`pooled_connection`)."""
    return pooled_connection(request.app[CONTEXT].pool)


async def create_endpoint(request: web.Request) -> web.Response:
    body = await _body(request, EndpointCreate)
    async with _conn(request) as conn:
        created = await ops.create_endpoint(conn, **body.model_dump())
    return web.json_response(created, status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        return web.json_response({"data": await ops.list_endpoints(conn)})


async def get_endpoint(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        return web.json_response(await ops.get_endpoint(conn, request.match_info["id"]))


async def update_endpoint(request: web.Request) -> web.Response:
    body = await _body(request, EndpointUpdate)
    changes = body.model_dump(include=body.model_fields_set)
    for name in set(changes) - NULLABLE:
        if changes[name] is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
    if not changes:
        raise InvalidInput("give at least one field to change", field="body")
    async with _conn(request) as conn:
        updated = await ops.update_endpoint(conn, request.match_info["id"], changes)
    return web.json_response(updated)


async def delete_endpoint(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        discarded = await ops.delete_endpoint(conn, request.match_info["id"])
    return web.json_response({"deleted": request.match_info["id"], "discarded": discarded})


async def rotate_secret(request: web.Request) -> web.Response:
    body = await _body(request, RotateSecret)
    async with _conn(request) as conn:
        rotated = await ops.rotate_secret(
            conn,
            request.match_info["id"],
            secret=body.secret,
            grace_seconds=body.grace_period_seconds,
        )
    return web.json_response(rotated)


async def endpoint_stats(request: web.Request) -> web.Response:
    window = ops.parse_window(request.query.get("window", "24h"))
    async with _conn(request) as conn:
        stats = await ops.endpoint_stats(conn, request.match_info["id"], window_seconds=window)
    return web.json_response(stats)


async def recover_endpoint(request: web.Request) -> web.Response:
    body = await _body(request, RecoverRequest)
    async with _conn(request) as conn:
        queued = await ops.recover_endpoint(conn, request.match_info["id"], since=body.since)
    return web.json_response({"recovered": queued, "count": len(queued)})


async def create_event(request: web.Request) -> web.Response:
    body = await _body(request, EventCreate)
    async with _conn(request) as conn:
        event_id = await ops.enqueue(
            conn,
            body.event_type,
            body.payload,
            ordering_key=body.ordering_key,
            idempotency_key=body.idempotency_key,
        )
    return web.json_response({"id": str(event_id)}, status=201)


async def list_events(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
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
    async with _conn(request) as conn:
        return web.json_response(await ops.get_event(conn, request.match_info["id"]))


async def get_event_attempts(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        page = await ops.list_attempts(
            conn,
            request.match_info["id"],
            cursor=request.query.get("cursor"),
            limit=_limit(request),
        )
    return web.json_response(page)


def _dead_filter(request: web.Request) -> ops.DeadFilter:
    return ops.DeadFilter(
        endpoint_id=request.query.get("endpoint_id"),
        event_type=request.query.get("event_type"),
        since=_time(request, "since"),
        until=_time(request, "until"),
    )


async def list_dead_letters(request: web.Request) -> web.Response:
    where = _dead_filter(request)
    async with _conn(request) as conn:
        page = await ops.list_dead(
            conn, where, cursor=request.query.get("cursor"), limit=_limit(request)
        )
    return web.json_response(page)


async def get_dead_letter(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        return web.json_response(await ops.get_dead(conn, request.match_info["id"]))


async def discard_dead_letter(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        discarded = await ops.discard_dead(conn, request.match_info["id"])
    return web.json_response({"discarded": discarded})


async def replay_dead_letter(request: web.Request) -> web.Response:
    async with _conn(request) as conn:
        dead = await ops.get_dead(conn, request.match_info["id"])
        queued = await ops.replay_dead(conn, [dead["id"]])
    return web.json_response({"replayed": queued, "count": len(queued)})


async def replay_dead_letters(request: web.Request) -> web.Response:
    body = await _body(request, ReplayRequest)
    where = ops.DeadFilter(
        endpoint_id=str(body.endpoint_id) if body.endpoint_id else None,
        event_type=body.event_type,
        since=body.since,
        until=body.until,
    )
    if body.ids is not None and where != ops.DeadFilter():
        raise InvalidInput("give either ids or filters, not both", field="ids")
    async with _conn(request) as conn:
        queued = await ops.replay_dead(conn, body.ids, where)
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
    # Why input that fits the document can still be refused with a 422 (rules across fields or
    # about stored state that a schema cannot state); None when the document says it all.
    refusable: str | None = None
    # What a client must know about the reply that no schema states (see the notes below).
    notes: tuple[str, ...] = ()

    @property
    def description(self) -> str | None:
        """The operation's description: its notes, then when it is refused."""
        parts = list(self.notes)
        if self.refusable:
            parts.append(f"Also refused with 422 when: {self.refusable}.")
        return " ".join(parts) or None

    @property
    def router_path(self) -> str:
        """The path as aiohttp routes it: a dead letter's {id} is digits only, so that
        /dead-letters/replay never reaches the {id} routes."""
        if self.path.startswith("/api/v1/dead-letters/{id}"):
            return self.path.replace("{id}", "{id:[0-9]+}")
        return self.path

    @property
    def id_schema(self) -> dict[str, Any]:
        """The schema of the {id} path parameter: a UUID, or a dead letter's number."""
        if self.path.startswith("/api/v1/dead-letters/"):
            return {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        return {"type": "string", "format": "uuid"}


_TIME = {"type": "string", "format": "date-time"}
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "type": {"type": "string", "pattern": patterns.EVENT_TYPE_RE.pattern},
    "event_type": {"type": "string", "pattern": patterns.EVENT_TYPE_RE.pattern},
    "endpoint_id": {"type": "string", "format": "uuid"},
    "since": _TIME,
    "until": _TIME,
    "limit": {"type": "integer", "minimum": 1, "maximum": ops.MAX_PAGE, "default": 100},
    "cursor": {"type": "string", "description": "next_cursor of the previous page"},
    "window": {
        "type": "string",
        "pattern": r"^[0-9]{1,7}(ms|s|m|h|d)?$",
        "default": "24h",
        "description": "1s to 90d, e.g. 1h or 24h",
    },
}
_RANGE = "since must be earlier than until"
# The one refusal no schema can state: which opaque strings this server issued as cursors.
CURSOR_REFUSAL = "a cursor must be one this server issued"

DEAD_FILTERS = ("endpoint_id", "event_type", "since", "until")

# Notes on replies: what the document cannot say with the request schemas alone.
_PAGED = (
    "A page may hold fewer than `limit` rows and still carry a `next_cursor`: pages are also "
    f"bounded by bytes ({ops.PAGE_BYTES // (1024 * 1024)} MiB of payloads, response bodies or "
    "errors). Follow `next_cursor` until it is null; always at least one row per page."
)
_PAYLOAD_TEXT = (
    "An event's `payload` is the JSON object enqueued, except for a row stored before nesting "
    "was capped at 64 levels and nested too deeply to parse: its `payload` is then the stored "
    'JSON text, a string, with `"payload_as_text": true` beside it.'
)
_MASKED = (
    f"Custom header values read `{ops.HEADER_MASK}`: only the create or PATCH reply that set "
    "them shows the values sent."
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/endpoints",
        create_endpoint,
        "Register an endpoint; the response holds its secret, shown only this once.",
        EndpointCreate,
        status=201,
        refusable="custom headers may not override the ones pgcourier sets; the standard "
        "scheme's secret is whsec_ followed by base64 of at least 24 bytes; a webhook needs a "
        "url and a Slack endpoint a slack_channel",
        notes=(_MASKED,),
    ),
    Route(
        "GET",
        "/api/v1/endpoints",
        list_endpoints,
        "List endpoints (never their secrets).",
        notes=(_MASKED,),
    ),
    Route("GET", "/api/v1/endpoints/{id}", get_endpoint, "One endpoint.", notes=(_MASKED,)),
    Route(
        "PATCH",
        "/api/v1/endpoints/{id}",
        update_endpoint,
        "Change an endpoint; disabling holds its deliveries, enabling resumes them.",
        EndpointUpdate,
        refusable="custom headers may not override the ones pgcourier sets; switching to the "
        "standard scheme needs a whsec_ secret (rotate it first); a Slack endpoint keeps a "
        "slack_channel",
        notes=(_MASKED,),
    ),
    Route(
        "DELETE",
        "/api/v1/endpoints/{id}",
        delete_endpoint,
        "Delete an endpoint; its pending and dead deliveries are discarded (recorded).",
    ),
    Route(
        "POST",
        "/api/v1/endpoints/{id}/rotate-secret",
        rotate_secret,
        "New secret, shown only this once; the old one keeps signing for the grace period.",
        RotateSecret,
        refusable="the standard scheme's secret is whsec_ followed by base64 of at least 24 bytes",
    ),
    Route(
        "GET",
        "/api/v1/endpoints/{id}/stats",
        endpoint_stats,
        "Attempts, success rate, latency, pending and dead counts over a window (e.g. 24h).",
        query=("window",),
        refusable="the window must be between 1s and 90d",
    ),
    Route(
        "POST",
        "/api/v1/endpoints/{id}/recover",
        recover_endpoint,
        "Re-queue the endpoint's failed and dead deliveries since a time.",
        RecoverRequest,
    ),
    Route(
        "POST",
        "/api/v1/events",
        create_event,
        "Enqueue an event, with courier.enqueue's semantics.",
        EventCreate,
        status=201,
        refusable="the payload must fit the size limit and hold no NUL character (\\u0000)",
    ),
    Route(
        "GET",
        "/api/v1/events",
        list_events,
        "Events, newest first, keyset-paginated.",
        query=("type", "since", "until", "limit", "cursor"),
        refusable=f"{_RANGE}; {CURSOR_REFUSAL}",
        notes=(_PAGED, _PAYLOAD_TEXT),
    ),
    Route(
        "GET",
        "/api/v1/events/{id}",
        get_event,
        "One event and its delivery status at each endpoint.",
        notes=(_PAYLOAD_TEXT,),
    ),
    Route(
        "GET",
        "/api/v1/events/{id}/attempts",
        get_event_attempts,
        "The attempts made for one event, oldest first, keyset-paginated.",
        query=("limit", "cursor"),
        refusable=CURSOR_REFUSAL,
        notes=(_PAGED,),
    ),
    Route(
        "GET",
        "/api/v1/dead-letters",
        list_dead_letters,
        "Dead deliveries, newest first, keyset-paginated.",
        query=(*DEAD_FILTERS, "limit", "cursor"),
        refusable=f"{_RANGE}; {CURSOR_REFUSAL}",
        notes=(_PAGED,),
    ),
    Route(
        "POST",
        "/api/v1/dead-letters/replay",
        replay_dead_letters,
        "Queue dead deliveries again (ids, or all matching the filters); twice queues once.",
        ReplayRequest,
        refusable=f"give ids or filters, not both; {_RANGE}",
    ),
    Route(
        "GET",
        "/api/v1/dead-letters/{id}",
        get_dead_letter,
        "One dead letter and its event.",
        notes=(_PAYLOAD_TEXT,),
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
            [{"name": "id", "in": "path", "required": True, "schema": route.id_schema}]
            if "{id}" in route.path
            else []
        )
        parameters += [
            {"name": q, "in": "query", "required": False, "schema": QUERY_SCHEMAS[q]}
            for q in route.query
        ]
        operation: dict[str, Any] = {
            "summary": route.summary,
            **({"description": route.description} if route.description else {}),
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
            required = any(f.is_required() for f in route.body.model_fields.values())
            operation["requestBody"] = {
                "required": required,
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


def _known_query_only(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route's handler, refusing query parameters it does not document (like unknown body
    fields: a typo such as ?limt=5 must not be silently ignored)."""
    allowed = frozenset(route.query)

    async def handler(request: web.Request) -> web.StreamResponse:
        for name in request.query:
            if name not in allowed:
                raise InvalidInput(f"unknown query parameter {name!r}", field=name or "query")
        return await route.handler(request)

    return handler


def add_routes(app: web.Application) -> None:
    """Register ROUTES on ``app``."""
    for route in ROUTES:
        app.router.add_route(route.method, route.router_path, _known_query_only(route))
