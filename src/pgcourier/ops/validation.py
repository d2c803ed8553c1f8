"""Validation shared by every operation: each function returns the value or raises
:class:`InvalidInput` naming the field, so the API, the CLI and the console give the same message.

The database enforces the same rules again (constraints and triggers), so a bad row can never be
written by any path; this module exists to name the field precisely before asking it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier import patterns
from pgcourier.errors import InvalidInput
from pgcourier.policy import parse_duration
from pgcourier.signing import SCHEMES, generate_secret, secret_key

_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
# An absolute http(s) URL: a host name or [IPv6] literal, an optional port up to 65535, then any
# path, query or fragment without whitespace. No user:password@ (credentials go in headers).
# The admin API's OpenAPI document states this same pattern, so the two cannot disagree.
URL_PATTERN = r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:" + _PORT + r")?([/?#][^\s]*)?$"
_URL = re.compile(URL_PATTERN)
MAX_URL = 2048


def validate_url(url: str) -> str:
    """An absolute http(s) URL with a host, or :class:`InvalidInput` naming ``url``."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput("the URL must start with http:// or https://", field="url")
    if len(url) > MAX_URL or not _URL.fullmatch(url):
        raise InvalidInput(
            f"{url!r} is not a valid URL: it needs a host, an optional port up to 65535, no "
            f"user:password@, no spaces, and at most {MAX_URL} characters",
            field="url",
        )
    return url


def parse_uuid(value: str, *, field: str = "id") -> UUID:
    """A UUID from text, or :class:`InvalidInput` naming the field."""
    try:
        return UUID(value)
    except ValueError as exc:
        raise InvalidInput(f"{value!r} is not a UUID", field=field) from exc


def plain(row: asyncpg.Record) -> dict[str, Any]:
    """A record as JSON-ready values: UUIDs as strings, times as ISO-8601."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "user-agent", "transfer-encoding", "connection"}
)
RESERVED_HEADER_PREFIXES = ("webhook-", "x-webhook-", "x-hub-signature")
DEFAULT_GRACE_SECONDS = 24 * 3600
MAX_GRACE_SECONDS = 7 * 24 * 3600


def validate_headers(headers: dict[str, str]) -> dict[str, str]:
    """Custom headers an endpoint may send, or :class:`InvalidInput` naming ``headers``.

    The database checks the same rules (``courier.valid_headers``).
    """
    if len(headers) > 20:
        raise InvalidInput("at most 20 custom headers", field="headers")
    for name, value in headers.items():
        lowered = name.lower()
        if not HEADER_NAME.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a valid header name", field="headers")
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES):
            raise InvalidInput(
                f"header {name!r} is set by pgcourier and cannot be overridden", field="headers"
            )
        if not isinstance(value, str) or len(value) > 1000:
            raise InvalidInput(
                f"header {name!r} needs a string value of at most 1000 characters", field="headers"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InvalidInput(f"header {name!r} has a control character", field="headers")
    return headers


def validate_timeout(timeout: float | None) -> float | None:
    """A per-endpoint request timeout: None (the relay's default) or 1 to 300 seconds."""
    if timeout is not None and not 1 <= timeout <= 300:
        raise InvalidInput("timeout_seconds must be between 1 and 300", field="timeout_seconds")
    return timeout


def validate_event_types(event_types: list[str]) -> list[str]:
    """Event-type patterns, de-duplicated, or :class:`InvalidInput` naming ``event_types``."""
    problems = patterns.validate_patterns(event_types)
    if problems:
        raise InvalidInput("; ".join(problems), field="event_types")
    return list(dict.fromkeys(event_types))


# A whsec_ secret as the API documents it: padded base64 of at least 24 bytes.
SECRET_PATTERN = r"^whsec_(?:[A-Za-z0-9+/]{4}){8,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def validate_event_type(event_type: str, *, field: str) -> str:
    """An event type (as a filter), or :class:`InvalidInput` naming ``field``."""
    if not patterns.is_valid_event_type(event_type):
        raise InvalidInput(f"{event_type!r} is not an event type, e.g. order.paid", field=field)
    return event_type


# Secrets of the schemes that key HMAC with the secret's own bytes.
RAW_SECRET_PATTERN = r"^[ -~]{16,500}$"


def validate_secret(secret: str | None, scheme: str = "standard") -> str:
    """The given secret, fit for ``scheme``, or a new ``whsec_`` one when None (a generated
    secret works for every scheme)."""
    if secret is None:
        return generate_secret()
    if scheme != "standard":
        # Not "enc:...": that prefix marks a value stored encrypted (pgcourier.sealing); a
        # secret spelled so would be taken for one that no key opens, and no relay would start.
        if not re.fullmatch(RAW_SECRET_PATTERN, secret) or secret.startswith("enc:"):
            raise InvalidInput(
                f"a {scheme} secret is 16 to 500 printable ASCII characters, not starting with"
                " 'enc:'",
                field="secret",
            )
        return secret
    try:
        if len(secret_key(secret)) < 24:
            raise ValueError("it must hold at least 24 bytes")
    except ValueError as exc:
        raise InvalidInput(f"invalid secret: {exc}", field="secret") from exc
    return secret


def validate_scheme(scheme: str) -> str:
    """A known signature scheme, or :class:`InvalidInput` naming ``signature_scheme``."""
    if scheme not in SCHEMES:
        raise InvalidInput(
            f"unknown signature scheme {scheme!r}; use one of {', '.join(SCHEMES)}",
            field="signature_scheme",
        )
    return scheme


def validate_permanent_statuses(statuses: list[int]) -> list[int]:
    """HTTP failure statuses (300-599) treated as permanent, at most 100, de-duplicated."""
    if len(statuses) > 100 or any(not 300 <= s <= 599 for s in statuses):
        raise InvalidInput(
            "permanent_statuses holds at most 100 statuses between 300 and 599",
            field="permanent_statuses",
        )
    return sorted(set(statuses))


def validate_limits(max_in_flight: int, rate_limit: float | None) -> None:
    """Per-endpoint limits: 1-1000 concurrent requests; a rate above 0, up to 10000/s."""
    if not 1 <= max_in_flight <= 1000:
        raise InvalidInput("max_in_flight must be between 1 and 1000", field="max_in_flight")
    if rate_limit is not None and not 0 < rate_limit <= 10_000:
        raise InvalidInput("rate_limit must be above 0 and at most 10000", field="rate_limit")


SLACK_CHANNEL_PATTERN = r"^[#@]?[A-Za-z0-9._-]{1,80}$"
SLACK_TOKEN_PATTERN = r"^xox[a-z]-[A-Za-z0-9-]{8,}$"
KINDS = ("webhook", "slack")


def slack_post_url(api_url: str) -> str:
    """Where a Slack endpoint posts (shown as its url)."""
    return api_url.rstrip("/") + "/chat.postMessage"


def validate_slack(kind: str, channel: str | None, token: str | None, template: str | None) -> None:
    """A Slack endpoint's channel, optional token and template; :class:`InvalidInput` names the
    field."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if kind == "slack" and channel is None:
        raise InvalidInput(
            "a Slack endpoint needs slack_channel, e.g. #requests", field="slack_channel"
        )
    if channel is not None and not re.fullmatch(SLACK_CHANNEL_PATTERN, channel):
        raise InvalidInput(
            f"{channel!r} is not a channel name or id, e.g. #requests or C0123ABC",
            field="slack_channel",
        )
    if token is not None and not re.fullmatch(SLACK_TOKEN_PATTERN, token):
        raise InvalidInput("slack_token must be a Slack token (xoxb-...)", field="slack_token")
    if template is not None and len(template) > 3000:
        raise InvalidInput("template holds at most 3000 characters", field="template")


def parse_window(text: str, *, field: str = "window") -> int:
    """A stats window such as ``1h``, ``30m`` or ``3600``, in whole seconds (1 s to 90 days)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} {text!r}: {exc}", field=field) from exc
    if not 1 <= seconds <= 90 * 86400:
        raise InvalidInput(f"{field} must be between 1s and 90d", field=field)
    return int(seconds)


def parse_aware_time(text: str, *, field: str) -> datetime:
    """An ISO-8601 time that names its zone, or :class:`InvalidInput` naming ``field``."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} {text!r} is not an ISO-8601 time", field=field) from exc
    if value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone, e.g. {text}Z", field=field)
    return value
