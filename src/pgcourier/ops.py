"""Operations shared by the CLI and the admin API: validate in Python, then one query.

Validation here gives the caller a precise message naming the field; the database enforces the
same rules again, so a bad row can never be written by any path.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier import patterns
from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput, NotFound
from pgcourier.policy import parse_duration
from pgcourier.signing import SCHEMES, generate_secret, secret_key

MAX_PAGE = 1000


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
        if not re.fullmatch(RAW_SECRET_PATTERN, secret):
            raise InvalidInput(
                f"a {scheme} secret is 16 to 500 printable ASCII characters", field="secret"
            )
        return secret
    try:
        if len(secret_key(secret)) < 24:
            raise ValueError("it must hold at least 24 bytes")
    except ValueError as exc:
        raise InvalidInput(f"invalid secret: {exc}", field="secret") from exc
    return secret


def _endpoint(row: asyncpg.Record) -> dict[str, Any]:
    return {**plain(row), "headers": json.loads(row["headers"])}


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


async def _read_endpoint(conn: asyncpg.Connection, eid: UUID) -> dict[str, Any]:
    row = await conn.fetchrow(QUERIES["get_endpoint"], eid)
    if row is None:
        raise NotFound(f"no endpoint {eid}")
    return _endpoint(row)


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


async def manage_default_slack(
    conn: asyncpg.Connection, *, enabled: bool, channel: str, api_url: str
) -> None:
    """Keep the endpoint that sends request_submitted to the default Slack channel in step with
    the settings (created when a bot token is set; held when it is not)."""
    with translate_errors():
        if enabled:
            await conn.execute(
                QUERIES["manage_default_slack"], slack_post_url(api_url), generate_secret(), channel
            )
        else:
            await conn.execute(QUERIES["disable_default_slack"])


async def create_endpoint(
    conn: asyncpg.Connection,
    *,
    url: str | None = None,
    event_types: list[str],
    description: str = "",
    secret: str | None = None,
    enabled: bool = True,
    timeout_seconds: float | None = None,
    headers: dict[str, str] | None = None,
    signature_scheme: str = "standard",
    permanent_statuses: list[int] | None = None,
    max_in_flight: int = 10,
    rate_limit: float | None = None,
    kind: str = "webhook",
    slack_channel: str | None = None,
    slack_token: str | None = None,
    template: str | None = None,
    slack_api_url: str = "https://slack.com/api/",
) -> dict[str, Any]:
    """Register an endpoint (a webhook, or a Slack channel with ``kind="slack"``). The returned
    dict holds the secret: the only time it is shown. A Slack token is never returned."""
    validate_slack(kind, slack_channel, slack_token, template)
    if kind == "slack":
        url = url or slack_post_url(slack_api_url)
    if url is None:
        raise InvalidInput("a webhook endpoint needs a url", field="url")
    validate_url(url)
    event_types = validate_event_types(event_types)
    validate_scheme(signature_scheme)
    secret = validate_secret(secret, signature_scheme)
    validate_timeout(timeout_seconds)
    headers = validate_headers(headers or {})
    statuses = validate_permanent_statuses(permanent_statuses or [])
    validate_limits(max_in_flight, rate_limit)
    with translate_errors():
        async with conn.transaction():
            eid = await conn.fetchval(
                QUERIES["create_endpoint"],
                url,
                event_types,
                secret,
                description,
                enabled,
                timeout_seconds,
                json.dumps(headers),
                signature_scheme,
                statuses,
                max_in_flight,
                rate_limit,
                kind,
                slack_channel,
                slack_token,
                template,
            )
            created = await _read_endpoint(conn, eid)
    return {**created, "secret": secret}


async def list_endpoints(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every endpoint not deleted, oldest first, without secrets."""
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_endpoints"])
    return [_endpoint(r) for r in rows]


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> dict[str, Any]:
    """One endpoint without its secret, or :class:`NotFound`."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        return await _read_endpoint(conn, eid)


UPDATABLE = (
    "url",
    "event_types",
    "description",
    "enabled",
    "timeout_seconds",
    "headers",
    "signature_scheme",
    "permanent_statuses",
    "max_in_flight",
    "rate_limit",
    "slack_channel",
    "slack_token",
    "template",
)


async def update_endpoint(
    conn: asyncpg.Connection,
    endpoint_id: str,
    changes: dict[str, Any],
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """Change some of an endpoint's settings (keys of ``changes`` among :data:`UPDATABLE`).

    Enabling wakes the relays, since the endpoint's held deliveries are due; disabling records
    ``reason`` (default: "disabled by an operator").
    """
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)[0]}", field=sorted(unknown)[0])
    if "url" in changes:
        validate_url(changes["url"])
    if "event_types" in changes:
        changes["event_types"] = validate_event_types(changes["event_types"])
    if "timeout_seconds" in changes:
        validate_timeout(changes["timeout_seconds"])
    if "headers" in changes:
        validate_headers(changes["headers"] or {})
    if "signature_scheme" in changes:
        validate_scheme(changes["signature_scheme"])
    if "permanent_statuses" in changes:
        changes["permanent_statuses"] = validate_permanent_statuses(changes["permanent_statuses"])
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    token = changes.pop("slack_token", None)
    with translate_errors():
        async with conn.transaction():
            if await conn.fetchval(QUERIES["lock_endpoint"], eid) is None:
                raise NotFound(f"no endpoint {endpoint_id}")
            current = await _read_endpoint(conn, eid)
            merged = {**current, **changes}
            validate_limits(merged["max_in_flight"], merged["rate_limit"])
            validate_slack(merged["kind"], merged["slack_channel"], token, merged["template"])
            await conn.execute(
                QUERIES["update_endpoint"],
                eid,
                merged["url"],
                merged["event_types"],
                merged["description"],
                merged["enabled"],
                reason or "disabled by an operator",
                merged["timeout_seconds"],
                json.dumps(merged["headers"] or {}),
                merged["signature_scheme"],
                merged["permanent_statuses"],
                merged["max_in_flight"],
                merged["rate_limit"],
                merged["slack_channel"],
                merged["template"],
                token,
            )
            if merged["enabled"] and not current["enabled"]:
                await conn.execute(QUERIES["wake_relays"])
            return await _read_endpoint(conn, eid)


async def set_endpoint_enabled(
    conn: asyncpg.Connection, endpoint_id: str, enabled: bool
) -> dict[str, Any]:
    """Enable or disable an endpoint; enabling wakes the relays for its held deliveries."""
    return await update_endpoint(conn, endpoint_id, {"enabled": enabled})


async def rotate_secret(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    secret: str | None = None,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
) -> dict[str, Any]:
    """Give an endpoint a new secret (generated unless given) and return it: the only time it
    is shown. The old secret keeps signing beside the new one for ``grace_seconds``."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise InvalidInput(
            f"grace_period_seconds must be between 0 and {MAX_GRACE_SECONDS}",
            field="grace_period_seconds",
        )
    with translate_errors():
        async with conn.transaction():
            scheme = (await _read_endpoint(conn, eid))["signature_scheme"]
            secret = validate_secret(secret, scheme)
            await conn.execute(QUERIES["rotate_secret"], eid, secret, grace_seconds)
            rotated = await _read_endpoint(conn, eid)
    return {**rotated, "secret": secret}


async def delete_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> int:
    """Delete an endpoint: it receives nothing more, and its pending and dead deliveries are
    discarded (recorded). Returns how many deliveries were discarded."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    with translate_errors():
        async with conn.transaction():
            deleted = await conn.fetchval(QUERIES["delete_endpoint"], eid, generate_secret())
            if deleted is None:
                raise NotFound(f"no endpoint {endpoint_id}")
            status = await conn.execute(QUERIES["discard_endpoint_deliveries"], eid)
    return int(status.split()[-1])


def parse_window(text: str, *, field: str = "window") -> int:
    """A stats window such as ``1h``, ``30m`` or ``3600``, in whole seconds (1 s to 90 days)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} {text!r}: {exc}", field=field) from exc
    if not 1 <= seconds <= 90 * 86400:
        raise InvalidInput(f"{field} must be between 1s and 90d", field=field)
    return int(seconds)


async def endpoint_stats(
    conn: asyncpg.Connection, endpoint_id: str, *, window_seconds: int = 86400
) -> dict[str, Any]:
    """How an endpoint fares over the last ``window_seconds``."""
    endpoint = await get_endpoint(conn, endpoint_id)
    eid = UUID(endpoint["id"])
    with translate_errors():
        row = await conn.fetchrow(QUERIES["endpoint_stats"], eid, float(window_seconds))
        failure = await conn.fetchrow(QUERIES["endpoint_last_failure"], eid)
    assert row is not None
    latency = row["latency_ms"] or [None, None]
    return {
        "endpoint_id": endpoint["id"],
        "enabled": endpoint["enabled"],
        "disabled_reason": endpoint["disabled_reason"],
        "window_seconds": window_seconds,
        "attempts": row["attempts"],
        "delivered": row["delivered"],
        "success_rate": row["delivered"] / row["attempts"] if row["attempts"] else None,
        "latency_p50_ms": latency[0],
        "latency_p99_ms": latency[1],
        "pending": row["pending"],
        "dead": row["dead"],
        "circuit_state": endpoint["circuit_state"],
        "consecutive_failures": endpoint["consecutive_failures"],
        "failing_since": endpoint["failing_since"],
        "paused_until": endpoint["paused_until"],
        "last_failure": plain(failure) if failure is not None else None,
    }


async def recover_endpoint(
    conn: asyncpg.Connection, endpoint_id: str, *, since: datetime
) -> list[int]:
    """Re-queue an endpoint's failed deliveries since ``since`` (dead ones and ones waiting for a
    retry); return their ids. Their webhook-id stays the event id."""
    await get_endpoint(conn, endpoint_id)
    with translate_errors():
        async with conn.transaction():
            rows = await conn.fetch(QUERIES["recover_endpoint"], UUID(endpoint_id), since)
            if rows:
                await conn.execute(QUERIES["wake_relays"])
    return [r["id"] for r in rows]


async def enqueue(
    conn: asyncpg.Connection,
    event_type: str,
    payload: dict[str, Any] | str,
    *,
    ordering_key: str | None = None,
    idempotency_key: str | None = None,
) -> UUID:
    """``courier.enqueue`` from Python, in the caller's transaction if one is open."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with translate_errors():
        event_id: UUID = await conn.fetchval(
            QUERIES["enqueue"], event_type, text, ordering_key, idempotency_key
        )
    return event_id


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters a listing or a bulk replay covers (None: any)."""

    endpoint_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def args(self) -> tuple[UUID | None, str | None, datetime | None, datetime | None]:
        """The filter as the queries' first four parameters, validated."""
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must be earlier than until", field="since")
        eid = (
            None if self.endpoint_id is None else parse_uuid(self.endpoint_id, field="endpoint_id")
        )
        if self.event_type is not None:
            validate_event_type(self.event_type, field="event_type")
        return eid, self.event_type, self.since, self.until


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")


async def list_dead(
    conn: asyncpg.Connection,
    where: DeadFilter | None = None,
    *,
    cursor: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of dead letters, newest first, with the cursor of the next page (None at the end)."""
    _check_limit(limit)
    after = _decode_dead_cursor(cursor) if cursor else (None, None)
    with translate_errors():
        rows = await conn.fetch(
            QUERIES["list_dead"], *(where or DeadFilter()).args(), *after, limit + 1
        )
    page = rows[:limit]
    following = (
        encode_cursor(page[-1]["dead_at"], str(page[-1]["id"])) if len(rows) > limit else None
    )
    return {"data": [plain(r) for r in page], "next_cursor": following}


MAX_ID = 2**63 - 1


def _dead_id(value: str | int) -> int:
    text = str(value)
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > MAX_ID:
        raise InvalidInput(f"{text!r} is not a dead-letter id", field="id")
    return int(text)


async def get_dead(conn: asyncpg.Connection, dead_id: str | int) -> dict[str, Any]:
    """One dead letter with its event, or :class:`NotFound`."""
    did = _dead_id(dead_id)
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_dead"], did)
    if row is None:
        raise NotFound(f"no dead letter {did}")
    return _event(row)


async def discard_dead(conn: asyncpg.Connection, dead_id: str | int) -> int:
    """Throw a dead letter away for good (recorded as discarded), or :class:`NotFound`."""
    did = _dead_id(dead_id)
    with translate_errors():
        row = await conn.fetchval(QUERIES["discard_dead"], did)
    if row is None:
        raise NotFound(f"no dead letter {did}")
    return did


async def replay_dead(
    conn: asyncpg.Connection, ids: list[int] | None, where: DeadFilter | None = None
) -> list[int]:
    """Queue dead deliveries again: the given ids, or else every one matching ``where``
    (all when None); return the ids queued.

    The event keeps its id, so receivers see the same ``webhook-id`` and can deduplicate.
    Replaying a delivery that is no longer dead does nothing, so replaying twice queues once.
    """
    with translate_errors():
        async with conn.transaction():
            if ids is None:
                args = (where or DeadFilter()).args()
                rows = await conn.fetch(QUERIES["replay_matching_dead"], *args)
            else:
                rows = await conn.fetch(QUERIES["replay_dead"], ids)
            if rows:
                await conn.execute(QUERIES["wake_relays"])
    return [r["id"] for r in rows]


def _event(row: asyncpg.Record) -> dict[str, Any]:
    return {**plain(row), "payload": json.loads(row["payload"])}


def parse_aware_time(text: str, *, field: str) -> datetime:
    """An ISO-8601 time that names its zone, or :class:`InvalidInput` naming ``field``."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{field} {text!r} is not an ISO-8601 time", field=field) from exc
    if value.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone, e.g. {text}Z", field=field)
    return value


def encode_cursor(created_at: datetime, event_id: str) -> str:
    """An opaque page cursor: the last event's (created_at, id)."""
    raw = f"{created_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, key = raw.partition("|")
        return datetime.fromisoformat(when), key
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) in an events cursor, or :class:`InvalidInput` naming ``cursor``."""
    when, key = _decode(cursor)
    try:
        return when, UUID(key)
    except ValueError as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def _decode_dead_cursor(cursor: str) -> tuple[datetime, int]:
    when, key = _decode(cursor)
    if not re.fullmatch(r"[0-9]{1,19}", key) or int(key) > MAX_ID:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return when, int(key)


async def list_events(
    conn: asyncpg.Connection,
    *,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """A page of events, newest first, with the cursor of the next page (None at the end)."""
    _check_limit(limit)
    if event_type is not None:
        validate_event_type(event_type, field="type")
    if since and until and since >= until:
        raise InvalidInput("since must be earlier than until", field="since")
    after = decode_cursor(cursor) if cursor else (None, None)
    with translate_errors():
        rows = await conn.fetch(
            QUERIES["list_events"], event_type, since, until, after[0], after[1], limit + 1
        )
    page = rows[:limit]
    following = (
        encode_cursor(page[-1]["created_at"], str(page[-1]["id"])) if len(rows) > limit else None
    )
    return {"data": [_event(r) for r in page], "next_cursor": following}


async def _require_event(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record:
    eid = parse_uuid(event_id, field="event_id")
    with translate_errors():
        row = await conn.fetchrow(QUERIES["get_event"], eid)
    if row is None:
        raise NotFound(f"no event {event_id}")
    return row


async def get_event(conn: asyncpg.Connection, event_id: str) -> dict[str, Any]:
    """One event with where it stands at each endpoint, or :class:`NotFound`."""
    row = await _require_event(conn, event_id)
    with translate_errors():
        deliveries = await conn.fetch(QUERIES["event_deliveries"], row["id"])
    return {**_event(row), "deliveries": [plain(d) for d in deliveries]}


async def event_attempts(conn: asyncpg.Connection, event_id: str) -> list[dict[str, Any]]:
    """Every attempt made for one event, oldest first (:class:`NotFound` if no such event)."""
    row = await _require_event(conn, event_id)
    with translate_errors():
        rows = await conn.fetch(QUERIES["event_attempts"], row["id"])
    return [plain(r) for r in rows]
