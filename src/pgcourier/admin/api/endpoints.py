"""``/api/v1/endpoints``: register, change, rotate, measure and recover endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pgcourier import ops
from pgcourier.admin.api.fields import (
    STRICT,
    Description,
    EventType,
    GraceSeconds,
    Headers,
    MaxInFlight,
    Patterns,
    RateLimit,
    Scheme,
    Secret,
    SlackChannel,
    SlackToken,
    Statuses,
    Template,
    Tenant,
    Timeout,
    Url,
)
from pgcourier.admin.api.requests import connection, read_body
from pgcourier.admin.api.routing import MASKED, Route
from pgcourier.admin.context import CONTEXT
from pgcourier.errors import InvalidInput
from pgcourier.sealing import Keyring

WaitSeconds = Annotated[float, Field(ge=0, le=330)]
TEST_NOTE = (
    "The event goes through the normal pipeline (a relay signs and sends it) and is marked "
    "`test` in event and attempt listings. 200 with `attempt` (status_code, duration_ms, the "
    "start of response_body, error, outcome) once a relay tried it; 202 with `attempt: null` "
    "and a `message` when none did within `wait_seconds` (the event stays queued), or at once "
    "when the endpoint is disabled (the event is held until it is enabled)."
)


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
    tenant: Tenant | None = Field(
        default=None,
        description="receive only this tenant's events; without one, matching events of every "
        "tenant and of none",
    )


NULLABLE = frozenset({"timeout_seconds", "rate_limit", "template", "tenant"})


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
    tenant: Tenant | None = Field(
        default=None, description="null: no tenant (every tenant's events); queued deliveries stay"
    )


class RotateSecret(BaseModel):
    """POST /api/v1/endpoints/{id}/rotate-secret"""

    model_config = STRICT

    secret: Secret | None = Field(default=None, description="the new secret; generated when absent")
    grace_period_seconds: GraceSeconds = Field(
        default=ops.DEFAULT_GRACE_SECONDS,
        description="how long the old secret keeps signing beside the new one",
    )


class TestSend(BaseModel):
    """POST /api/v1/endpoints/{id}/test"""

    model_config = STRICT

    event_type: EventType | None = Field(
        default=None, description=f"the test event's type; {ops.TEST_EVENT_TYPE} when absent"
    )
    wait_seconds: WaitSeconds | None = Field(
        default=None,
        description="how long to wait for the attempt; the endpoint's timeout plus 5 s when absent",
    )


class RecoverRequest(BaseModel):
    """POST /api/v1/endpoints/{id}/recover"""

    model_config = STRICT

    since: AwareDatetime


def _keyring(request: web.Request) -> Keyring | None:
    """PGCOURIER_SECRET_KEY, for operations that store secrets."""
    return request.app[CONTEXT].keyring


async def create_endpoint(request: web.Request) -> web.Response:
    body = await read_body(request, EndpointCreate)
    async with connection(request) as conn:
        created = await ops.create_endpoint(conn, **body.model_dump(), keyring=_keyring(request))
    return web.json_response(created, status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant")
    async with connection(request) as conn:
        return web.json_response({"data": await ops.list_endpoints(conn, tenant=tenant)})


async def get_endpoint(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response(await ops.get_endpoint(conn, request.match_info["id"]))


async def update_endpoint(request: web.Request) -> web.Response:
    body = await read_body(request, EndpointUpdate)
    changes = body.model_dump(include=body.model_fields_set)
    for name in set(changes) - NULLABLE:
        if changes[name] is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
    if not changes:
        raise InvalidInput("give at least one field to change", field="body")
    async with connection(request) as conn:
        updated = await ops.update_endpoint(
            conn, request.match_info["id"], changes, keyring=_keyring(request)
        )
    return web.json_response(updated)


async def delete_endpoint(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        discarded = await ops.delete_endpoint(
            conn, request.match_info["id"], keyring=_keyring(request)
        )
    return web.json_response({"deleted": request.match_info["id"], "discarded": discarded})


async def rotate_secret(request: web.Request) -> web.Response:
    body = await read_body(request, RotateSecret)
    async with connection(request) as conn:
        rotated = await ops.rotate_secret(
            conn,
            request.match_info["id"],
            secret=body.secret,
            grace_seconds=body.grace_period_seconds,
            keyring=_keyring(request),
        )
    return web.json_response(rotated)


async def endpoint_stats(request: web.Request) -> web.Response:
    window = ops.parse_window(request.query.get("window", "24h"))
    async with connection(request) as conn:
        stats = await ops.endpoint_stats(conn, request.match_info["id"], window_seconds=window)
    return web.json_response(stats)


async def test_endpoint(request: web.Request) -> web.Response:
    body = await read_body(request, TestSend)
    sent = await ops.send_test(
        lambda: connection(request),  # one per step: no connection is held while waiting
        request.match_info["id"],
        event_type=body.event_type,
        wait_seconds=body.wait_seconds,
    )
    # 202: accepted and queued, but no attempt to show yet (no relay running, or a slow one).
    return web.json_response(sent, status=200 if sent["attempt"] is not None else 202)


async def recover_endpoint(request: web.Request) -> web.Response:
    body = await read_body(request, RecoverRequest)
    async with connection(request) as conn:
        queued = await ops.recover_endpoint(conn, request.match_info["id"], since=body.since)
    return web.json_response({"recovered": queued, "count": len(queued)})


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
        notes=(MASKED,),
    ),
    Route(
        "GET",
        "/api/v1/endpoints",
        list_endpoints,
        "List endpoints (never their secrets).",
        query=("tenant",),
        notes=(MASKED,),
    ),
    Route("GET", "/api/v1/endpoints/{id}", get_endpoint, "One endpoint.", notes=(MASKED,)),
    Route(
        "PATCH",
        "/api/v1/endpoints/{id}",
        update_endpoint,
        "Change an endpoint; disabling holds its deliveries, enabling resumes them.",
        EndpointUpdate,
        refusable="custom headers may not override the ones pgcourier sets; switching to the "
        "standard scheme needs a whsec_ secret (rotate it first); a Slack endpoint keeps a "
        "slack_channel",
        notes=(MASKED,),
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
        "/api/v1/endpoints/{id}/test",
        test_endpoint,
        "Send a signed test event to this endpoint alone and return the first attempt.",
        TestSend,
        notes=(TEST_NOTE,),
    ),
    Route(
        "POST",
        "/api/v1/endpoints/{id}/recover",
        recover_endpoint,
        "Re-queue the endpoint's failed and dead deliveries since a time.",
        RecoverRequest,
    ),
)
