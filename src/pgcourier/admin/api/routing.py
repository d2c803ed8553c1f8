"""What a route is (registration and documentation from one record) and the notes routes share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from pgcourier import ops, patterns
from pgcourier.errors import InvalidInput

MAX_ID = ops.MAX_ID


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
    "tenant": {"type": "string", "pattern": ops.TENANT_PATTERN},
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
RANGE = "since must be earlier than until"
# The one refusal no schema can state: which opaque strings this server issued as cursors.
CURSOR_REFUSAL = "a cursor must be one this server issued"

DEAD_FILTERS = ("endpoint_id", "event_type", "since", "until", "tenant")

# Notes on replies: what the document cannot say with the request schemas alone.
PAGED = (
    "A page may hold fewer than `limit` rows and still carry a `next_cursor`: pages are also "
    f"bounded by bytes ({ops.PAGE_BYTES // (1024 * 1024)} MiB of payloads, response bodies or "
    "errors). Follow `next_cursor` until it is null; always at least one row per page."
)
PAYLOAD_TEXT = (
    "An event's `payload` is the JSON object enqueued, except for a row stored before nesting "
    "was capped at 64 levels and nested too deeply to parse: its `payload` is then the stored "
    'JSON text, a string, with `"payload_as_text": true` beside it.'
)
MASKED = (
    f"Custom header values read `{ops.HEADER_MASK}`: only the create or PATCH reply that set "
    "them shows the values sent."
)


def known_query_only(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route's handler, refusing query parameters it does not document (like unknown body
    fields: a typo such as ?limt=5 must not be silently ignored)."""
    allowed = frozenset(route.query)

    async def handler(request: web.Request) -> web.StreamResponse:
        for name in request.query:
            if name not in allowed:
                raise InvalidInput(f"unknown query parameter {name!r}", field=name or "query")
        return await route.handler(request)

    return handler
