"""The OpenAPI document tells clients what the reply schemas alone do not: short pages with a
cursor, payloads returned as text, masked header values."""

from __future__ import annotations

from typing import Any

import pytest

from pgcourier import ops
from pgcourier.admin.api import openapi_document

DOC = openapi_document()


def _description(path: str, method: str) -> str:
    operation: dict[str, Any] = DOC["paths"][path][method]
    return str(operation.get("description", ""))


@pytest.mark.parametrize(
    "path",
    ["/api/v1/events", "/api/v1/events/{id}/attempts", "/api/v1/dead-letters"],
)
def test_paged_listings_say_a_short_page_can_still_have_a_next_cursor(path: str) -> None:
    text = _description(path, "get")
    assert "fewer than `limit` rows and still carry a `next_cursor`" in text
    assert "4 MiB" in text


@pytest.mark.parametrize(
    "path", ["/api/v1/events", "/api/v1/events/{id}", "/api/v1/dead-letters/{id}"]
)
def test_event_payload_replies_say_a_payload_may_come_back_as_text(path: str) -> None:
    assert '`"payload_as_text": true`' in _description(path, "get")


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/endpoints", "get"),
        ("/api/v1/endpoints", "post"),
        ("/api/v1/endpoints/{id}", "get"),
        ("/api/v1/endpoints/{id}", "patch"),
    ],
)
def test_endpoint_replies_say_header_values_are_masked(path: str, method: str) -> None:
    assert f"read `{ops.HEADER_MASK}`" in _description(path, method)


def test_the_update_schema_says_a_mask_keeps_the_stored_value() -> None:
    headers = DOC["components"]["schemas"]["EndpointUpdate"]["properties"]["headers"]
    assert ops.HEADER_MASK in headers["description"]
    assert "keeps" in headers["description"]


def test_refusals_are_still_described_after_the_notes() -> None:
    text = _description("/api/v1/events", "get")
    assert text.index("next_cursor") < text.index("Also refused with 422 when:")
