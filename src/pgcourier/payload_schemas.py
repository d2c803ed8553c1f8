"""JSON Schemas of event payloads (the event-type catalog): pure checks, one cached validator each.

Draft 2020-12 unless a schema's ``$schema`` names another draft the ``jsonschema`` library knows.
References resolve only inside the schema itself (and to the drafts' own meta-schemas): a
``$ref`` to a URL is refused, never fetched, so registering a schema cannot make the admin
server reach the network. ``format`` is an annotation only, as the 2020-12 draft says by default.

Every failure names the JSON path of the offending value the way the API names fields
(``payload.items.0.price``), so a 422 says where to look.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import referencing.exceptions
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from referencing import Registry

# An explicit registry, however empty, turns off jsonschema's fetching of unknown references
# (it adds the drafts' own meta-schemas to it); without one it would fetch any URL over HTTP.
_REGISTRY: Registry[Any] = Registry()
_CACHE_SIZE = 256
_compiled: OrderedDict[str, Validator] = OrderedDict()


class SchemaProblem(ValueError):
    """A schema, or a value checked against one, is refused; ``field`` is the JSON path."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _path(root: str, parts: Iterable[Any]) -> str:
    return ".".join([root, *(str(p) for p in parts)])


def compile_schema(schema: Any, *, field: str = "schema") -> Validator:
    """A validator for ``schema``, or :class:`SchemaProblem` saying why it is no JSON Schema."""
    try:
        return _compile(schema, field)
    except RecursionError as exc:
        raise SchemaProblem(f"{field} is nested too deeply", field) from exc


def _compile(schema: Any, field: str) -> Validator:
    if not isinstance(schema, dict | bool):
        raise SchemaProblem(f"{field} must be a JSON object (or true/false)", field)
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)  # type: ignore[arg-type]  # (the stubs forget boolean schemas)
    except SchemaError as exc:
        where = _path(field, exc.absolute_path)
        raise SchemaProblem(
            f"{field} is not a valid JSON Schema: {exc.message} (at {where})", where
        ) from exc
    for where, ref in _references(schema, field):
        if not ref.startswith("#"):
            raise SchemaProblem(
                f"{where} is {ref!r}: only references inside the schema (#/$defs/...) are "
                "followed, nothing is fetched",
                where,
            )
    validator: Validator = cls(schema, registry=_REGISTRY)
    return validator


def _references(node: Any, where: str) -> Iterable[tuple[str, str]]:
    """Every ``$ref`` and ``$dynamicRef`` string in a schema, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield f"{where}.{key}", value
            else:
                yield from _references(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _references(value, f"{where}.{index}")


def _first_error(validator: Validator, instance: Any) -> ValidationError | None:
    try:
        error: ValidationError | None = best_match(validator.iter_errors(instance))
        return error
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaProblem(
            f"the schema refers to {getattr(exc, 'ref', exc)!r}, which it does not hold",
            "schema",
        ) from exc


def check_instance(validator: Validator, instance: Any, *, root: str) -> None:
    """Raise :class:`SchemaProblem` naming the path (``root.a.0.b``) of the first failure."""
    try:
        error = _first_error(validator, instance)
    except RecursionError as exc:
        raise SchemaProblem(f"{root} is nested too deeply to check", root) from exc
    except (TypeError, ValueError, OverflowError) as exc:
        # jsonschema's own arithmetic on what JSON parsers accept but Postgres does not (NaN,
        # Infinity, 1e400 with multipleOf), or keywords of drafts before 4 it cannot apply.
        raise SchemaProblem(f"{root} cannot be checked against its schema: {exc}", root) from exc
    if error is None:
        return
    parts = list(error.absolute_path)
    if (
        error.validator == "required"
        and isinstance(error.instance, dict)
        and isinstance(error.validator_value, list)
    ):
        # Name the missing property itself, not the object that lacks it.
        wanted: list[Any] = list(error.validator_value)
        missing = [p for p in wanted if p not in error.instance]
        parts += missing[:1]
    where = _path(root, parts)
    raise SchemaProblem(f"{where}: {error.message}", where)


def cached_validator(fingerprint: str, schema_text: str | None) -> Validator | None:
    """The compiled validator for the schema with this fingerprint; None if not cached yet and
    ``schema_text`` is None (the caller then fetches the schema and asks again)."""
    found = _compiled.get(fingerprint)
    if found is not None:
        _compiled.move_to_end(fingerprint)
        return found
    if schema_text is None:
        return None
    validator = compile_schema(json.loads(schema_text))
    _compiled[fingerprint] = validator
    while len(_compiled) > _CACHE_SIZE:
        _compiled.popitem(last=False)
    return validator
