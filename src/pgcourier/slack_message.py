"""Slack messages for events: pure functions from an event to ``chat.postMessage`` arguments.

``request_submitted`` gets a readable Block Kit layout: a header with the title, fields for the
requester and the other short values, the description, and a plain-text fallback. Other event
types get a compact generic layout. An endpoint may instead set a template: plain text in which
``{data.title}``, ``{type}``, ``{id}`` and ``{timestamp}`` are replaced by the event's values.
Templates are substitution only, never code; a missing field renders as nothing.

Every value taken from the event (payload values and keys, the type, the id, and template
substitutions) has ``&``, ``<`` and ``>`` escaped as ``&amp;``, ``&lt;`` and ``&gt;``, Slack's
rule for mrkdwn text: request text is written by end users, and ``<!channel>`` would ping
everyone and ``<https://evil.example|Approve>`` show a disguised link. A template's own text is
the operator's and stays as written. The header is ``plain_text``, which Slack does not parse
for mentions or links, so it is left as is (escaping it would show ``&lt;`` literally).

Text is cut to Slack's limits (header 150 characters, a section 3000, a field 2000, 50 blocks,
10 fields per section, a message 40000), ending in an ellipsis; limits count the escaped text,
and a cut never splits an entity.
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
_ENTITY = re.compile(r"&(?:amp|lt|gt);")


def escape(text: str) -> str:
    """``text`` safe inside mrkdwn: Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when anything was cut.

    A cut that would fall inside ``&amp;``, ``&lt;`` or ``&gt;`` moves before it: half an
    entity would show as stray text.
    """
    if len(text) <= limit:
        return text
    cut = limit - 1
    for match in _ENTITY.finditer(text, max(0, cut - 4), cut + 4):
        if match.start() < cut < match.end():
            cut = match.start()
    return text[:cut] + "…"


def _mrkdwn(value: Any) -> str:
    """A value from the event, as text for a mrkdwn field (escaped)."""
    return escape(_plain(value))


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
    """Replace each ``{path}`` (``data.title``, ``type``...) with the event's value there,
    escaped for mrkdwn; the template's own text is left as written."""

    def value(match: re.Match[str]) -> str:
        current: Any = event
        for part in match.group(1).split("."):
            if not isinstance(current, dict) or part not in current:
                return ""
            current = current[part]
        return _mrkdwn(current)

    return _PLACEHOLDER.sub(value, template)


def _fields(data: dict[str, Any], skip: set[str]) -> list[dict[str, Any]]:
    fields = []
    for key, val in data.items():
        if key in skip or val in (None, "") or isinstance(val, dict | list):
            continue
        text = f"*{escape(_label(key))}*\n{_mrkdwn(val)}"
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
            {
                "type": "mrkdwn",
                "text": truncate(f"`{escape(event_type)}` · {_mrkdwn(event.get('id'))}", 300),
            }
        ],
    }
    if template is not None:
        text = truncate(render_template(template, event), SECTION_LIMIT)
        simple = [{"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}, context]
        return {
            "text": truncate(text or escape(event_type), TEXT_LIMIT),
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
                    "text": truncate(f"*Requester*\n{_mrkdwn(requester)}", FIELD_LIMIT),
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
                        "text": truncate(_mrkdwn(description), SECTION_LIMIT),
                    },
                }
            )
        blocks.append(context)
        # The top-level text is mrkdwn too (notifications and clients without blocks).
        fallback = f"New request: {escape(heading)}"
        if requester is not None:
            fallback += f" (from {_mrkdwn(requester)})"
        return {"text": truncate(fallback, TEXT_LIMIT), "blocks": blocks, "metadata": metadata}
    # Generic: the type as a heading line, the short values as fields.
    generic: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(f"*{escape(event_type)}*", SECTION_LIMIT),
            },
        }
    ]
    for group in _chunks(_fields(data, set()), FIELDS_PER_SECTION)[:10]:
        generic.append({"type": "section", "fields": group})
    generic.append(context)
    return {
        "text": truncate(f"{escape(event_type)} event", TEXT_LIMIT),
        "blocks": generic,
        "metadata": metadata,
    }
