"""The event-type catalog: register, change, list, show and delete types; check payloads against
their schemas; switch strict mode (the database refuses unregistered types) on or off.

A type's ``schema`` and ``example`` are JSON values (``None`` when absent). A schema must be a
valid JSON Schema and the example must match it (:mod:`pgcourier.payload_schemas`); both are
checked here, in Python, before one statement writes them.

Deleting a type is allowed in strict mode too: it is how a type is retired, and from that moment
the database refuses new events of it (events already in the outbox are still delivered). The
reply says so (``"strict": true``), and the README tells operators.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput, NotFound
from pgcourier.ops.validation import plain, validate_event_type
from pgcourier.payload_schemas import (
    SchemaProblem,
    cached_validator,
    check_instance,
    compile_schema,
)

MODES = ("open", "strict")
MAX_DESCRIPTION = 1000
# Each of schema and example, as stored JSON text (the table's constraints say the same).
MAX_DOCUMENT_BYTES = 256 * 1024
UPDATABLE = frozenset({"description", "schema", "example"})


def _record(row: asyncpg.Record) -> dict[str, Any]:
    out = plain(row)
    for key in ("schema", "example"):
        out[key] = None if row[key] is None else json.loads(row[key])
    return out


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _check_document(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        nul = _holds_nul(value)
        text = json.dumps(value)
    except RecursionError as exc:
        raise InvalidInput(f"{field} is nested too deeply", field=field) from exc
    if nul:  # Postgres's jsonb cannot hold one
        raise InvalidInput(f"{field} holds a NUL character (\\u0000)", field=field)
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"{field} is larger than {MAX_DOCUMENT_BYTES} bytes", field=field)
    return text


def _validated(description: str, schema: Any, example: Any) -> tuple[str | None, str | None]:
    """The schema and example as JSON text, after every rule; InvalidInput names the field."""
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"description holds at most {MAX_DESCRIPTION} characters", field="description"
        )
    if "\x00" in description:
        raise InvalidInput("description holds a NUL character", field="description")
    if example is not None and not isinstance(example, dict):
        raise InvalidInput("example must be a JSON object, like a payload", field="example")
    schema_text = _check_document(schema, "schema")
    example_text = _check_document(example, "example")
    try:
        if schema is not None:
            validator = compile_schema(schema)
            if example is not None:
                check_instance(validator, example, root="example")
    except SchemaProblem as exc:
        raise InvalidInput(str(exc), field=exc.field) from exc
    return schema_text, example_text


async def create_event_type(
    conn: asyncpg.Connection,
    name: str,
    *,
    description: str = "",
    schema: Any = None,
    example: Any = None,
) -> dict[str, Any]:
    """Register a type; :class:`InvalidInput` naming the field if anything is refused,
    ``name`` included when it is taken."""
    validate_event_type(name, field="name")
    schema_text, example_text = _validated(description, schema, example)
    with translate_errors():
        row = await conn.fetchrow(
            QUERIES["insert_event_type"], name, description, schema_text, example_text
        )
    if row is None:
        raise InvalidInput(f"event type {name!r} is already registered", field="name")
    return _record(row)


async def update_event_type(
    conn: asyncpg.Connection, name: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change a type's description, schema or example (``None`` clears the latter two); the
    example is checked against the schema it will be stored beside."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput(f"{field} cannot be changed", field=field)
    if not changes:
        raise InvalidInput("give at least one field to change", field="body")
    if changes.get("description", "") is None:
        raise InvalidInput("description cannot be null", field="description")
    validate_event_type(name, field="name")
    with translate_errors():
        async with conn.transaction():
            row = await conn.fetchrow(QUERIES["lock_event_type"], name)
            if row is None:
                raise NotFound(f"no event type {name}")
            current = _record(row)
            merged = {key: changes.get(key, current[key]) for key in UPDATABLE}
            schema_text, example_text = _validated(
                merged["description"], merged["schema"], merged["example"]
            )
            updated = await conn.fetchrow(
                QUERIES["update_event_type"],
                name,
                merged["description"],
                schema_text,
                example_text,
            )
    return _record(updated)


async def list_event_types(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every registered type, by name."""
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_event_types"])
    return [_record(r) for r in rows]


async def get_event_type(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    """One type, or :class:`NotFound`."""
    validate_event_type(name, field="name")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_event_type"], name)
    if row is None:
        raise NotFound(f"no event type {name}")
    return _record(row)


async def delete_event_type(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    """Remove a type from the catalog (see the module's note on strict mode)."""
    validate_event_type(name, field="name")
    with translate_errors():
        deleted = await conn.fetchval(QUERIES["delete_event_type"], name)
        strict = await event_types_strict(conn)
    if deleted is None:
        raise NotFound(f"no event type {name}")
    return {"deleted": name, "strict": strict}


async def check_payload(conn: asyncpg.Connection, event_type: str, payload: Any) -> None:
    """:class:`InvalidInput` naming the failing path (``payload.amount``) when ``event_type``
    has a schema that ``payload`` does not match; nothing to check otherwise.

    One small query per call (the schema's fingerprint); the schema itself is fetched and
    compiled only the first time a fingerprint is seen.
    """
    with translate_errors():
        fingerprint = await conn.fetchval(QUERIES["event_type_schema_fingerprint"], event_type)
        if fingerprint is None:
            return
        validator = cached_validator(fingerprint, None)
        if validator is None:
            text = await conn.fetchval(QUERIES["event_type_schema"], event_type)
            if text is None:  # removed in between: nothing to check any more
                return
            try:
                validator = cached_validator(fingerprint, text)
            except SchemaProblem as exc:  # written around pgcourier, straight into the table
                raise InvalidInput(
                    f"the schema registered for {event_type} is not valid ({exc}): fix it with "
                    "pgcourier event-types update",
                    field="event_type",
                ) from exc
    assert validator is not None
    try:
        check_instance(validator, payload, root="payload")
    except SchemaProblem as exc:
        raise InvalidInput(
            f"the payload does not match the schema of {event_type}: {exc}", field=exc.field
        ) from exc


async def event_types_strict(conn: asyncpg.Connection) -> bool:
    """Whether the database refuses unregistered event types."""
    with translate_errors():
        strict: bool = await conn.fetchval(QUERIES["event_types_strict"])
    return strict


async def apply_event_types_mode(conn: asyncpg.Connection, mode: str) -> bool:
    """Make the database ``strict`` (refuse unregistered types) or ``open``; True if that
    changed anything. Creating or dropping the trigger locks the outbox against inserts
    until it commits, so it is done only when the mode actually changes."""
    if mode not in MODES:
        raise InvalidInput(f"event types mode must be one of {', '.join(MODES)}", field="mode")
    want = mode == "strict"
    if await event_types_strict(conn) == want:
        return False
    with translate_errors():
        await conn.execute(QUERIES["event_types_strict_on" if want else "event_types_strict_off"])
    return True
