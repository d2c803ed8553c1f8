"""``/api/v1``: endpoints, events and dead letters over HTTP, on the same operations as the CLI.

Every body is validated by a pydantic model that forbids unknown fields; every failure becomes
``{"error": {"code", "message", "field"}}`` with a 4xx status (see :mod:`pgcourier.admin.app`).

One module per resource (its request models, handlers and route table); :mod:`.routing` says what
a route is, :mod:`.table` gathers them and :mod:`.openapi` documents them.
"""

from __future__ import annotations

from pgcourier.admin.api.openapi import openapi_document
from pgcourier.admin.api.routing import CURSOR_REFUSAL, QUERY_SCHEMAS, Route
from pgcourier.admin.api.table import ROUTES, add_routes

__all__ = ["CURSOR_REFUSAL", "QUERY_SCHEMAS", "ROUTES", "Route", "add_routes", "openapi_document"]
