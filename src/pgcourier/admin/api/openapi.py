"""The OpenAPI 3.1 document of ``/api/v1``, built from the route table and the request models."""

from __future__ import annotations

from typing import Any

from pgcourier import __version__, patterns
from pgcourier.admin.api.routing import QUERY_SCHEMAS
from pgcourier.admin.api.table import ROUTES

_REF = "#/components/schemas/"
_NAME = {"type": "string", "pattern": patterns.EVENT_TYPE_RE.pattern}
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
        if "{tenant}" in route.path:
            schema = QUERY_SCHEMAS["tenant"]
            parameters.append({"name": "tenant", "in": "path", "required": True, "schema": schema})
        if "{name}" in route.path:  # an event type's name (the catalog)
            parameters.append({"name": "name", "in": "path", "required": True, "schema": _NAME})
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
