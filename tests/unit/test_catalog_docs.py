"""The Markdown catalog for receivers, and its verification snippets run against real signatures."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from pgcourier import catalog_docs, signing

ROWS = [
    {
        "name": "invoice.paid",
        "description": "An invoice was paid.",
        "schema": {"type": "object", "required": ["amount"]},
        "example": {"amount": 3},
    },
    {"name": "user.deleted", "description": "", "schema": None, "example": None},
]
SECRETS = {
    "standard": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "github": "It's a Secret to Everybody",
    "timestamped-hex": "It's a Secret to Everybody",
    "stripe-style": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # raw schemes key with any secret
}
BODY = b'{"id":"e1","type":"invoice.paid","timestamp":"2026-01-01T00:00:00Z","data":{"amount":3}}'


def snippet(scheme: str) -> Any:
    """The verify function that the rendered document gives for ``scheme``."""
    text = catalog_docs.render(ROWS)
    section = text.split(f"### `{scheme}`", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)  # the document's own code, as a receiver would paste it
    return namespace["verify"]


@pytest.mark.parametrize("scheme", signing.SCHEMES)
def test_each_snippet_verifies_pgcourier_signatures(scheme: str) -> None:
    verify = snippet(scheme)
    secret = SECRETS[scheme]
    other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" if scheme == "standard" else secret + "x"
    headers = signing.sign_headers(scheme, [secret], "e1", "invoice.paid", BODY)
    assert verify(headers, BODY, secret) is True
    assert verify(headers, BODY + b" ", secret) is False
    assert verify(headers, BODY, other) is False
    # During a rotation: two signatures, either secret verifies.
    rotated = signing.sign_headers(scheme, [other, secret], "e1", "invoice.paid", BODY)
    assert verify(rotated, BODY, secret) is True


@pytest.mark.parametrize("scheme", ["standard", "timestamped-hex", "stripe-style"])
def test_timed_snippets_refuse_stale_messages(scheme: str) -> None:
    verify = snippet(scheme)
    old = int(time.time()) - 301
    headers = signing.sign_headers(scheme, [SECRETS[scheme]], "e1", "a.b", BODY, timestamp=old)
    assert verify(headers, BODY, SECRETS[scheme]) is False


def test_the_document_lists_every_type() -> None:
    text = catalog_docs.render(ROWS)
    assert text.startswith("# Webhook events\n")
    assert "- `invoice.paid`\n- `user.deleted`" in text
    assert "An invoice was paid." in text
    assert '"required": [\n    "amount"\n  ]' in text
    assert '"data": {\n    "amount": 3\n  }' in text
    assert "pgcourier verify" in text
    assert "No event types are registered yet." in catalog_docs.render([])
