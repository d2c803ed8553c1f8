"""Slack message building: Block Kit for requests, generic layout, templates, Slack's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgcourier.slack_message import (
    FIELD_LIMIT,
    FIELDS_PER_SECTION,
    HEADER_LIMIT,
    SECTION_LIMIT,
    build_message,
    escape,
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
    huge: dict[str, Any] = {"title": "t" * 1000, "description": "d" * 10_000}
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


# Issue 15.5: end users write request text; Slack parses <...> and &...; in mrkdwn.
PING = "<!channel>"
LINK = "<https://evil.example|Approve>"
HOSTILE = {
    "title": f"{PING} urgent",
    "requested_by": LINK,
    "description": f"see {LINK} &amp; {PING}",
    "<!here>": "&lt;b&gt;",
}


def _mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn string in a message: the top-level text and each mrkdwn text object."""
    texts = [message["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return texts


def test_escape() -> None:
    assert escape("a & b <c> &amp;") == "a &amp; b &lt;c&gt; &amp;amp;"


def test_request_values_cannot_ping_or_link() -> None:
    message = build_message({**EVENT, "data": HOSTILE})
    texts = _mrkdwn_texts(message)
    assert len(texts) >= 5
    for text in texts:
        assert "<" not in text
        assert ">" not in text
    header, fields, description, _context = message["blocks"]
    # plain_text is not parsed by Slack: left as written, or users would read "&lt;".
    assert header["text"] == {"type": "plain_text", "text": "<!channel> urgent"}
    assert [f["text"] for f in fields["fields"]] == [
        "*Requester*\n&lt;https://evil.example|Approve&gt;",
        "*&lt;!here&gt;*\n&amp;lt;b&amp;gt;",
    ]
    assert description["text"]["text"] == (
        "see &lt;https://evil.example|Approve&gt; &amp;amp; &lt;!channel&gt;"
    )
    assert message["text"] == (
        "New request: &lt;!channel&gt; urgent (from &lt;https://evil.example|Approve&gt;)"
    )


def test_generic_layout_and_context_escape_type_id_keys_and_values() -> None:
    event = {"id": "<!here>", "type": "a<b>&c", "data": {"k&": "<@U123>"}}
    texts = _mrkdwn_texts(build_message(event))
    assert all("<" not in t and ">" not in t for t in texts)
    assert "*a&lt;b&gt;&amp;c*" in texts
    assert "*K&amp;*\n&lt;@U123&gt;" in texts
    assert "`a&lt;b&gt;&amp;c` · &lt;!here&gt;" in texts


def test_templates_escape_substituted_values_only() -> None:
    event = {**EVENT, "data": {"title": LINK, "nested": {"x": PING}}}
    template = "<!here> {data.title} & {data.nested}"  # the operator's own mention stays
    expected = "<!here> &lt;https://evil.example|Approve&gt; & " + escape(
        json.dumps({"x": PING}, ensure_ascii=False)
    )
    assert render_template(template, event) == expected
    message = build_message(event, template=template)
    assert message["text"] == expected
    assert message["blocks"][0]["text"]["text"] == expected


@pytest.mark.parametrize("shift", range(6))
def test_a_cut_never_splits_an_entity(shift: int) -> None:
    # Put "&amp;" at every position around the cut point of a field.
    text = "x" * (FIELD_LIMIT - 12 + shift) + "&" * 20
    message = build_message({**EVENT, "type": "order.paid", "data": {"v": text}})
    [field] = message["blocks"][1]["fields"]
    cut = field["text"]
    assert len(cut) <= FIELD_LIMIT
    assert cut.endswith("…")
    body = cut.removesuffix("…").split("\n", 1)[1]
    # Only whole entities before the ellipsis.
    assert body.lstrip("x").replace("&amp;", "") == ""
    assert len(cut) >= FIELD_LIMIT - 4  # and no more was dropped than the entity


def test_truncate_keeps_entities_whole() -> None:
    assert truncate("ab&amp;cd", 5) == "ab…"
    assert truncate("ab&lt;cd", 7) == "ab&lt;…"
    assert truncate("abc&gt;", 4) == "abc…"
