"""Reading a request: its JSON body through a model, query values, a pooled connection."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pgcourier import ops
from pgcourier.admin.context import CONTEXT, pooled_connection
from pgcourier.errors import InvalidInput

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_body(request: web.Request, model: type[ModelT]) -> ModelT:
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


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    return None if raw is None else ops.parse_aware_time(raw, field=name)


def query_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError as exc:
        raise InvalidInput(f"limit {raw!r} is not a whole number", field="limit") from exc
    return limit


def connection(request: web.Request) -> contextlib.AbstractAsyncContextManager[Any]:
    """A pooled connection for this request (see :func:`pooled_connection`)."""
    return pooled_connection(request.app[CONTEXT].pool)
