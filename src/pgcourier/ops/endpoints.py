"""Endpoint operations: register, list, show, change, rotate, delete, stats and recover."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput, NotFound
from pgcourier.ops.paging import BATCH_SIZE, batches
from pgcourier.ops.retrying import retried
from pgcourier.ops.tenants import validate_tenant
from pgcourier.ops.validation import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    parse_uuid,
    plain,
    slack_post_url,
    validate_event_types,
    validate_headers,
    validate_limits,
    validate_permanent_statuses,
    validate_scheme,
    validate_secret,
    validate_slack,
    validate_timeout,
    validate_url,
)
from pgcourier.sealing import Keyring, Unsealer
from pgcourier.secrets_at_rest import seal_for_writing
from pgcourier.signing import generate_secret

# What every custom header value reads as once stored: receivers' credentials go in headers, so
# they are shown like secrets, only in the response to the request that set them. One fixed
# mask for every value, so that not even a value's length shows.
HEADER_MASK = "********"


def _endpoint(row: asyncpg.Record, *, reveal: bool = False) -> dict[str, Any]:
    headers: dict[str, str] = json.loads(row["headers"])
    if not reveal:
        headers = dict.fromkeys(headers, HEADER_MASK)
    return {**plain(row), "headers": headers}


async def _read_endpoint(
    conn: asyncpg.Connection, eid: UUID, *, reveal: bool = False
) -> dict[str, Any]:
    row = await conn.fetchrow(QUERIES["get_endpoint"], eid)
    if row is None:
        raise NotFound(f"no endpoint {eid}")
    return _endpoint(row, reveal=reveal)


def _unmask(sent: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """Headers as sent in a change, where a value equal to the mask keeps the stored value: a
    client may send back what it read (GET, edit one field, PATCH) without erasing them."""
    kept = dict(sent)
    for name, value in sent.items():
        if value == HEADER_MASK:
            if name not in stored:
                raise InvalidInput(
                    f"header {name!r} has the mask {HEADER_MASK!r} as its value but no stored "
                    "value to keep; send its value",
                    field="headers",
                )
            kept[name] = stored[name]
    return kept


async def _check_secrets_fit(
    conn: asyncpg.Connection, eid: UUID, scheme: str, keyring: Keyring | None
) -> None:
    """The stored secrets, decrypted, fit ``scheme`` (the database can check plain ones only)."""
    row = await conn.fetchrow(QUERIES["endpoint_stored_secrets"], eid)
    if row is None:
        raise NotFound(f"no endpoint {eid}")
    opener = Unsealer(keyring)
    for stored in (row["secret"], row["previous_secret"]):
        if stored is None:
            continue
        try:
            validate_secret(opener.open(stored), scheme)
        except InvalidInput:
            raise InvalidInput(
                "the secret does not fit the signature scheme: the standard scheme needs a "
                "whsec_ secret (rotate-secret with a whsec_ one first)",
                field="signature_scheme",
            ) from None


async def manage_default_slack(
    conn: asyncpg.Connection,
    *,
    enabled: bool,
    channel: str,
    api_url: str,
    keyring: Keyring | None = None,
) -> None:
    """Keep the endpoint that sends request_submitted to the default Slack channel in step with
    the settings (created when a bot token is set; held when it is not). Its token is the
    relay's setting, never stored; its unused signing secret is stored like any other."""
    with translate_errors():
        if enabled:
            secret = await seal_for_writing(conn, keyring, generate_secret())
            await conn.execute(
                QUERIES["manage_default_slack"], slack_post_url(api_url), secret, channel
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
    tenant: str | None = None,
    keyring: Keyring | None = None,
) -> dict[str, Any]:
    """Register an endpoint (a webhook, or a Slack channel with ``kind="slack"``). The returned
    dict holds the secret: the only time it is shown. A Slack token is never returned. With a
    ``keyring`` (PGCOURIER_SECRET_KEY) both are stored encrypted.

    With a ``tenant`` the endpoint receives only that tenant's events; without one, matching
    events of every tenant and of none."""
    validate_tenant(tenant)
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
    headers = _unmask(validate_headers(headers or {}), {})
    statuses = validate_permanent_statuses(permanent_statuses or [])
    validate_limits(max_in_flight, rate_limit)
    stored_secret = await seal_for_writing(conn, keyring, secret)
    stored_token = (
        None if slack_token is None else await seal_for_writing(conn, keyring, slack_token)
    )
    with translate_errors():
        async with conn.transaction():
            eid = await conn.fetchval(
                QUERIES["create_endpoint"],
                url,
                event_types,
                stored_secret,
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
                stored_token,
                template,
                tenant,
            )
            created = await _read_endpoint(conn, eid)
    # The caller sent these values: they are shown back this once, as the secret is.
    return {**created, "headers": headers, "secret": secret}


async def list_endpoints(
    conn: asyncpg.Connection, *, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Every endpoint not deleted (only ``tenant``'s when given), oldest first, without
    secrets."""
    validate_tenant(tenant)
    with translate_errors():
        rows = await conn.fetch(QUERIES["list_endpoints"], tenant)
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
    "tenant",
)


async def update_endpoint(
    conn: asyncpg.Connection,
    endpoint_id: str,
    changes: dict[str, Any],
    *,
    reason: str | None = None,
    keyring: Keyring | None = None,
) -> dict[str, Any]:
    """Change some of an endpoint's settings (keys of ``changes`` among :data:`UPDATABLE`).

    Enabling wakes the relays, since the endpoint's held deliveries are due; disabling records
    ``reason`` (default: "disabled by an operator"). A new Slack token is stored encrypted with
    ``keyring``, whose keys also open the stored secrets to check them against a new scheme.
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
    sent_headers: dict[str, str] | None = None
    if "headers" in changes:
        sent_headers = dict(validate_headers(changes["headers"] or {}))
    if "signature_scheme" in changes:
        validate_scheme(changes["signature_scheme"])
    if "permanent_statuses" in changes:
        changes["permanent_statuses"] = validate_permanent_statuses(changes["permanent_statuses"])
    if "tenant" in changes:
        # (None: the endpoint leaves its tenant and receives every tenant's events. Moved to
        # another tenant, its deliveries of the old tenant's events are discarded below.)
        validate_tenant(changes["tenant"])
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    token = changes.pop("slack_token", None)
    with translate_errors():
        async with conn.transaction():
            if await conn.fetchval(QUERIES["lock_endpoint"], eid) is None:
                raise NotFound(f"no endpoint {endpoint_id}")
            current = await _read_endpoint(conn, eid, reveal=True)
            if "headers" in changes:
                changes["headers"] = _unmask(changes["headers"] or {}, current["headers"])
            merged = {**current, **changes}
            validate_limits(merged["max_in_flight"], merged["rate_limit"])
            validate_slack(merged["kind"], merged["slack_channel"], token, merged["template"])
            if merged["signature_scheme"] != current["signature_scheme"]:
                await _check_secrets_fit(conn, eid, merged["signature_scheme"], keyring)
            if token is not None:
                token = await seal_for_writing(conn, keyring, token)
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
                merged["tenant"],
            )
            if merged["tenant"] is not None and merged["tenant"] != current["tenant"]:
                # Wait out any fan-out in flight (it read the endpoint before this change and
                # may still queue the old tenant's events for it), then discard what it holds
                # of other tenants' events: never sent to the new tenant's receiver.
                await conn.execute(QUERIES["lock_fan_out"])
                await conn.execute(
                    QUERIES["discard_foreign_tenant_deliveries"], eid, merged["tenant"]
                )
            if merged["enabled"] and not current["enabled"]:
                await conn.execute(QUERIES["wake_relays"])
            updated = await _read_endpoint(conn, eid)
    if sent_headers is not None:  # what the caller sent is shown back (masks stay masks)
        updated["headers"] = sent_headers
    return updated


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
    keyring: Keyring | None = None,
) -> dict[str, Any]:
    """Give an endpoint a new secret (generated unless given) and return it: the only time it
    is shown (stored encrypted with ``keyring``). The old secret keeps signing beside the new
    one for ``grace_seconds``."""
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
            stored = await seal_for_writing(conn, keyring, secret)
            await conn.execute(QUERIES["rotate_secret"], eid, stored, grace_seconds)
            rotated = await _read_endpoint(conn, eid)
    return {**rotated, "secret": secret}


async def delete_endpoint(
    conn: asyncpg.Connection, endpoint_id: str, *, keyring: Keyring | None = None
) -> int:
    """Delete an endpoint: it receives nothing more, and its pending and dead deliveries are
    discarded (recorded). Returns how many deliveries were discarded."""
    eid = parse_uuid(endpoint_id, field="endpoint_id")
    # Its secrets are overwritten with a random one no-one knows, stored like any other.
    forgotten = await seal_for_writing(conn, keyring, generate_secret())
    with translate_errors():
        async with conn.transaction():
            deleted = await conn.fetchval(QUERIES["delete_endpoint"], eid, forgotten)
            if deleted is None:
                raise NotFound(f"no endpoint {endpoint_id}")
            status = await conn.execute(QUERIES["discard_endpoint_deliveries"], eid)
    return int(status.split()[-1])


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
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    since: datetime,
    batch_size: int = BATCH_SIZE,
) -> list[int]:
    """Re-queue an endpoint's failed deliveries since ``since`` (dead ones and ones waiting for a
    retry); return their ids. Their webhook-id stays the event id.

    As :func:`pgcourier.ops.replay_dead`: the ids are listed first, then changed ``batch_size``
    at a time, each batch re-checked and committed on its own, the relays woken after each.
    """
    await get_endpoint(conn, endpoint_id)
    eid = UUID(endpoint_id)
    with translate_errors():
        ids = [r["id"] for r in await conn.fetch(QUERIES["recoverable_deliveries"], eid, since)]
        recovered: list[int] = []
    for batch in batches(ids, batch_size):
        rows = await retried(conn, functools.partial(_recover_batch, conn, batch, eid, since))
        recovered.extend(r["id"] for r in rows)
    return recovered


async def _recover_batch(
    conn: asyncpg.Connection, batch: list[int], eid: UUID, since: datetime
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES["recover_deliveries"], batch, eid, since)
    if rows:
        await conn.execute(QUERIES["wake_relays"])
    return rows
