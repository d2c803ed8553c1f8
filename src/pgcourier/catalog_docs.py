"""``pgcourier event-types docs``: the event-type catalog as Markdown, for the people who build
receivers: each type with its description, schema and example, then how to verify signatures.

Pure: a function of the catalog's rows. The verification snippets use Python's standard library
only (a receiver need not install pgcourier); a test runs each of them against pgcourier's own
signatures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgcourier.signing import DEFAULT_TOLERANCE

_INTRO = """\
Every event arrives as an HTTP `POST` with a JSON body (`Content-Type: application/json`):

```json
{"id": "<event id>", "type": "<event type>", "timestamp": "<ISO-8601>", "data": {<payload>}}
```

`data` is the payload described below for each type. The same event may arrive more than once
(delivery is at least once, and retries and replays keep the id): deduplicate on `id`.
"""

# One verifier per scheme, stdlib only. Each defines verify(headers, body, secret) -> bool, with
# headers a mapping of lower-case names (your framework's request headers work: they ignore case).
SNIPPETS: dict[str, tuple[str, str]] = {
    "standard": (
        "Standard Webhooks (the default): headers `webhook-id`, `webhook-timestamp` and "
        "`webhook-signature` (`v1,<base64>`, several space-separated during a secret rotation). "
        "Any Standard Webhooks library verifies it; by hand:",
        f"""\
import base64, hashlib, hmac, time

def verify(headers, body: bytes, secret: str, tolerance: int = {DEFAULT_TOLERANCE}) -> bool:
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old or too far ahead: a replayed message
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{{msg_id}}.{{timestamp}}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(expected, sig[3:])
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )
""",
    ),
    "github": (
        "GitHub style: `X-Hub-Signature-256: sha256=<hex>` over the body alone, keyed with the "
        "whole secret's bytes (comma-separated values during a rotation); no timestamp.",
        """\
import hashlib, hmac

def verify(headers, body: bytes, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    offered = headers["x-hub-signature-256"].split(",")
    return any(hmac.compare_digest(expected, sig.strip()) for sig in offered)
""",
    ),
    "timestamped-hex": (
        "Timestamped hex: `X-Webhook-Signature: <hex>` over `{timestamp}.{body}` with "
        "`X-Webhook-Timestamp`, keyed with the whole secret's bytes.",
        f"""\
import hashlib, hmac, time

def verify(headers, body: bytes, secret: str, tolerance: int = {DEFAULT_TOLERANCE}) -> bool:
    timestamp = headers["x-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{{timestamp}}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    offered = headers["x-webhook-signature"].split(",")
    return any(hmac.compare_digest(expected, sig.strip()) for sig in offered)
""",
    ),
    "stripe-style": (
        "Stripe style: `X-Webhook-Signature: t=<timestamp>,v1=<hex>` over `{timestamp}.{body}`, "
        "keyed with the whole secret's bytes (one `v1=` per active secret).",
        f"""\
import hashlib, hmac, time

def verify(headers, body: bytes, secret: str, tolerance: int = {DEFAULT_TOLERANCE}) -> bool:
    parts = [p.strip().partition("=") for p in headers["x-webhook-signature"].split(",")]
    timestamp = next(value for key, _, value in parts if key == "t")
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    signed = f"{{timestamp}}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, _, value in parts if key == "v1")
""",
    ),
}

_VERIFY_OUTRO = """\
Always verify the exact bytes received, before parsing: re-serialised JSON does not verify.

When a signature does not verify, `pgcourier verify` says why (a missing header, a timestamp
outside the tolerance and by how much, a signature mismatch, a secret of the wrong format):

```bash
pgcourier verify --scheme standard --secret-file secret.txt --body-file body.json \\
    --header 'webhook-id: …' --header 'webhook-timestamp: …' --header 'webhook-signature: …'
```

The admin API answers the same question at `POST /api/v1/verify`.
"""


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2, ensure_ascii=False), "```", ""]


def _event_type(row: dict[str, Any]) -> list[str]:
    lines = [f"### `{row['name']}`", ""]
    if row.get("description"):
        lines += [row["description"], ""]
    if row.get("schema") is not None:
        lines += ["Payload schema (JSON Schema):", "", *_json_block(row["schema"])]
    else:
        lines += ["No schema is registered for this type's payload.", ""]
    if row.get("example") is not None:
        body = {
            "id": "0d5e2c1a-0000-4000-8000-000000000000",
            "type": row["name"],
            "timestamp": "2026-01-01T00:00:00Z",
            "data": row["example"],
        }
        lines += ["Example body:", "", *_json_block(body)]
    return lines


def render(rows: Sequence[dict[str, Any]], *, title: str = "Webhook events") -> str:
    """The Markdown catalog of ``rows`` (as :func:`pgcourier.ops.list_event_types` returns)."""
    lines = [f"# {title}", "", _INTRO, "## Event types", ""]
    if not rows:
        lines += ["No event types are registered yet.", ""]
    else:
        lines += [f"- `{row['name']}`" for row in rows] + [""]
        for row in rows:
            lines += _event_type(row)
    lines += [
        "## Verifying signatures",
        "",
        "Each endpoint uses one of these schemes (ask for yours; `standard` is the default). "
        "All are HMAC-SHA256 with your endpoint's secret. Reject a message that does not verify "
        "(answer 4xx).",
        "",
    ]
    for scheme, (words, code) in SNIPPETS.items():
        lines += [f"### `{scheme}`", "", words, "", "```python", code.rstrip("\n"), "```", ""]
    lines.append(_VERIFY_OUTRO)
    return "\n".join(lines)
