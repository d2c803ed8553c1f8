"""``/api/v1/event-types``: the catalog of event types, their descriptions, schemas and examples."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from pgcourier import ops
from pgcourier.admin.api.fields import STRICT, EventType
from pgcourier.admin.api.requests import connection, read_body
from pgcourier.admin.api.routing import Route
from pgcourier.errors import InvalidInput

SCHEMA_HELP = (
    "a JSON Schema (draft 2020-12 unless $schema names another) that POST /events payloads of "
    "this type must match; only references inside it (#/...) are followed"
)
EXAMPLE_HELP = "an example payload, shown to receivers; it must match the schema"
# Any JSON value in the model (ops checks it is an object or a boolean, naming the field: a pydantic
# union would name its member type instead), documented as what is accepted.
SchemaField = Annotated[Any, WithJsonSchema({"type": ["object", "boolean", "null"]})]
REFUSED = (
    "the schema is not a valid JSON Schema, refers outside itself, or the example does not "
    "match it (the field names the JSON path); a text holds a NUL character (\\u0000); the "
    "name is already registered (create)"
)


class EventTypeCreate(BaseModel):
    """POST /api/v1/event-types"""

    model_config = STRICT

    name: EventType
    description: str = Field(default="", max_length=ops.event_types.MAX_DESCRIPTION)
    schema_: SchemaField = Field(default=None, alias="schema", description=SCHEMA_HELP)
    example: dict[str, Any] | None = Field(default=None, description=EXAMPLE_HELP)


def _at_least_one(schema: dict[str, Any]) -> None:
    # description cannot be null (schema and example can: null removes them).
    prop = schema["properties"]["description"]
    if "anyOf" in prop:
        [kept] = [s for s in prop.pop("anyOf") if s.get("type") != "null"]
        prop.pop("default", None)
        prop.update(kept)
    schema["minProperties"] = 1


class EventTypeUpdate(BaseModel):
    """PATCH /api/v1/event-types/{name}: the fields given change; null removes a schema or
    example."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_at_least_one)

    description: str | None = Field(default=None, max_length=ops.event_types.MAX_DESCRIPTION)
    schema_: SchemaField = Field(default=None, alias="schema", description=SCHEMA_HELP)
    example: dict[str, Any] | None = Field(default=None, description=EXAMPLE_HELP)


async def create_event_type(request: web.Request) -> web.Response:
    body = await read_body(request, EventTypeCreate)
    async with connection(request) as conn:
        created = await ops.create_event_type(
            conn,
            body.name,
            description=body.description,
            schema=body.schema_,
            example=body.example,
        )
    return web.json_response(created, status=201)


async def list_event_types(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response({"data": await ops.list_event_types(conn)})


async def get_event_type(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response(await ops.get_event_type(conn, request.match_info["name"]))


async def update_event_type(request: web.Request) -> web.Response:
    body = await read_body(request, EventTypeUpdate)
    changes = body.model_dump(include=body.model_fields_set, by_alias=True)
    if not changes:
        raise InvalidInput("give at least one field to change", field="body")
    async with connection(request) as conn:
        updated = await ops.update_event_type(conn, request.match_info["name"], changes)
    return web.json_response(updated)


async def delete_event_type(request: web.Request) -> web.Response:
    async with connection(request) as conn:
        return web.json_response(await ops.delete_event_type(conn, request.match_info["name"]))


STRICT_NOTE = (
    "With PGCOURIER_EVENT_TYPES=strict the database refuses events of unregistered types; "
    "deleting a type then retires it at once (the reply's `strict` says whether that applies)."
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/event-types",
        create_event_type,
        "Register an event type with a description, an optional JSON Schema and an example.",
        EventTypeCreate,
        status=201,
        refusable=REFUSED,
    ),
    Route("GET", "/api/v1/event-types", list_event_types, "Every registered event type."),
    Route("GET", "/api/v1/event-types/{name}", get_event_type, "One event type."),
    Route(
        "PATCH",
        "/api/v1/event-types/{name}",
        update_event_type,
        "Change an event type's description, schema or example (null removes the latter two).",
        EventTypeUpdate,
        refusable=REFUSED.removesuffix("; the name is already registered (create)"),
    ),
    Route(
        "DELETE",
        "/api/v1/event-types/{name}",
        delete_event_type,
        "Remove an event type from the catalog.",
        notes=(STRICT_NOTE,),
    ),
)
