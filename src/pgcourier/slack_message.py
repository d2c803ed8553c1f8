"""Slack messages for events: pure functions from an event to ``chat.postMessage`` arguments.

``request_submitted`` gets a readable Block Kit layout: a header with the title, fields for the
requester and the other short values, the description, and a plain-text fallback. Other event
types get a compact generic layout. An endpoint may instead set a template: plain text in which
``{data.title}``, ``{type}``, ``{id}`` and ``{timestamp}`` are replaced by the event's values.
Templates are substitution only, never code; a missing field renders as nothing.

Text is cut to Slack's limits (header 150 characters, a section 3000, a field 2000, 50 blocks,
10 fields per section, a message 40000), ending in an ellipsis.
"""

from __future__ import annotations

import json
import re
from typing import Any

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_PER_SECTION = 10
TEXT_LIMIT = 40_000
METADATA_EVENT_TYPE = "pgcourier_event"

# Keys of a request's payload that get a place of their own; the others become fields.
_TITLE_KEYS = ("title", "subject", "summary", "name")
_REQUESTER_KEYS = ("requester", "requested_by", "user", "submitted_by", "author")
_DESCRIPTION_KEYS = ("description", "details", "body", "reason")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if data.get(key) not in (None, ""):
            return key, data[key]
    return None, None


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def render_template(template: str, event: dict[str, Any]) -> str:
    """Replace each ``{path}`` (``data.title``, ``type``...) with the event's value there."""

    def value(match: re.Match[str]) -> str:
        current: Any = event
        for part in match.group(1).split("."):
            if not isinstance(current, dict) or part not in current:
                return ""
            current = current[part]
        return _plain(current)

    return _PLACEHOLDER.sub(value, template)


def _fields(data: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    fields = []
    for key, val in data.items():
        if key in skip or val in (None, "") or isinstance(val, dict | list):
            continue
        text = f"*{_label(key)}*\n{_plain(val)}"
        fields.append({"type": "mrkdwn", "text": truncate(text, FIELD_LIMIT)})
    return fields


def _chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_message(event: dict[str, Any], template: str | None = None) -> dict[str, Any]:
    """``text``, ``blocks`` and ``metadata`` for ``chat.postMessage``.

    ``event`` is the webhook body: ``{"id", "type", "timestamp", "data"}``. The event id goes in
    message metadata so that a message can be traced back to its event.
    """
    raw_data = event.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    event_type = str(event.get("type", ""))
    metadata = {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {"event_id": str(event.get("id", "")), "event_type": event_type},
    }
    context = {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": truncate(f"`{event_type}` · {event.get('id')}", 300)}
        ],
    }
    if template is not None:
        text = truncate(render_template(template, event), SECTION_LIMIT)
        simple = [{"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}, context]
        return {
            "text": truncate(text or event_type, TEXT_LIMIT),
            "blocks": simple,
            "metadata": metadata,
        }
    if event_type == "request_submitted":
        title_key, title = _first(data, _TITLE_KEYS)
        requester_key, requester = _first(data, _REQUESTER_KEYS)
        description_key, description = _first(data, _DESCRIPTION_KEYS)
        heading = _plain(title) or "New request"
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": truncate(heading, HEADER_LIMIT)},
            }
        ]
        fields = []
        if requester is not None:
            fields.append(
                {
                    "type": "mrkdwn",
                    "text": truncate(f"*Requester*\n{_plain(requester)}", FIELD_LIMIT),
                }
            )
        skip = {k for k in (title_key, requester_key, description_key) if k}
        fields += _fields(data, skip)
        for group in _chunks(fields, FIELDS_PER_SECTION)[:10]:
            blocks.append({"type": "section", "fields": group})
        if description is not None:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": truncate(_plain(description), SECTION_LIMIT),
                    },
                }
            )
        blocks.append(context)
        fallback = f"New request: {heading}"
        if requester is not None:
            fallback += f" (from {_plain(requester)})"
        return {"text": truncate(fallback, TEXT_LIMIT), "blocks": blocks, "metadata": metadata}
    # Generic: the type as a heading line, the short values as fields.
    generic: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(f"*{event_type}*", SECTION_LIMIT)},
        }
    ]
    for group in _chunks(_fields(data, set()), FIELDS_PER_SECTION)[:10]:
        generic.append({"type": "section", "fields": group})
    generic.append(context)
    return {
        "text": truncate(f"{event_type} event", TEXT_LIMIT),
        "blocks": generic,
        "metadata": metadata,
    }
