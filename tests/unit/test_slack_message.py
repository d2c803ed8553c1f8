"""Slack message building: Block Kit for requests, generic layout, templates, Slack's limits."""

from __future__ import annotations

from pgcourier.slack_message import (
    FIELDS_PER_SECTION,
    HEADER_LIMIT,
    SECTION_LIMIT,
    build_message,
    render_template,
    truncate,
)

EVENT = {
    "id": "0d5e2c1a-0000-0000-0000-000000000001",
    "type": "request_submitted",
    "timestamp": "2026-11-25T09:00:00Z",
    "data": {"title": "Access to prod", "requested_by": "grace", "reason": "on call", "n": 3},
}


def test_request_layout_uses_known_keys() -> None:
    message = build_message(EVENT)
    header, fields, description, context = message["blocks"]
    assert header["text"]["text"] == "Access to prod"
    assert [f["text"] for f in fields["fields"]] == ["*Requester*\ngrace", "*N*\n3"]
    assert description["text"]["text"] == "on call"
    assert EVENT["id"] in context["elements"][0]["text"]
    assert message["text"] == "New request: Access to prod (from grace)"
    assert message["metadata"]["event_payload"]["event_id"] == EVENT["id"]


def test_a_request_without_a_title_still_reads_well() -> None:
    message = build_message({**EVENT, "data": {}})
    assert message["blocks"][0]["text"]["text"] == "New request"
    assert message["text"] == "New request: New request"


def test_other_events_get_a_compact_generic_layout() -> None:
    message = build_message({**EVENT, "type": "order.paid", "data": {"order_id": 42, "x": [1]}})
    heading, fields, _context = message["blocks"]
    assert heading["text"]["text"] == "*order.paid*"
    assert [f["text"] for f in fields["fields"]] == ["*Order id*\n42"]  # nested values skipped
    assert message["text"] == "order.paid event"


def test_templates_substitute_fields_and_render_missing_ones_empty() -> None:
    event = {**EVENT, "data": {"a": {"b": "deep"}, "n": 0}}
    assert render_template("{type}: {data.a.b} {data.n} [{data.nope}] [{data.a.b.c}]", event) == (
        "request_submitted: deep 0 [] []"
    )
    # No code runs: braces that are not a plain path stay as written.
    assert render_template("{__import__('os')} {data.a}", event) == (
        '{__import__(\'os\')} {"b": "deep"}'
    )
    message = build_message(event, template="Got {data.a.b}")
    assert message["text"] == "Got deep"
    assert message["blocks"][0]["text"]["text"] == "Got deep"


def test_long_text_is_cut_to_slack_limits() -> None:
    huge = {"title": "t" * 1000, "description": "d" * 10_000}
    huge.update({f"k{i}": i for i in range(35)})
    message = build_message({**EVENT, "data": huge})
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == HEADER_LIMIT
    assert header.endswith("…")
    sections = [b for b in message["blocks"] if "fields" in b]
    assert all(len(b["fields"]) <= FIELDS_PER_SECTION for b in sections)
    assert sum(len(b["fields"]) for b in sections) == 35
    description = message["blocks"][-2]["text"]["text"]
    assert len(description) == SECTION_LIMIT
    assert len(message["blocks"]) <= 50


def test_truncate() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"
