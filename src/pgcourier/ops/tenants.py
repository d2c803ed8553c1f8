"""Tenant operations: the tenant rule shared by every path, and per-tenant stats.

A tenant is a name an operator gives a customer (1-255 characters, no control characters); it
is stored on events and endpoints, not registered anywhere: a tenant exists while something
carries its name.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pgcourier.db import QUERIES, translate_errors
from pgcourier.errors import InvalidInput

MAX_TENANT = 255
# What the API documents for every tenant field: any characters but control characters. (The
# database checks the same: courier.valid_tenant.)
TENANT_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"


def validate_tenant(tenant: str | None, *, field: str = "tenant") -> str | None:
    """The tenant, or :class:`InvalidInput` naming ``field``; None stays None (no tenant)."""
    if tenant is None:
        return None
    if not 1 <= len(tenant) <= MAX_TENANT or any(ord(c) < 32 or ord(c) == 127 for c in tenant):
        raise InvalidInput(
            f"a tenant is 1-{MAX_TENANT} characters without control characters", field=field
        )
    return tenant


async def tenant_stats(
    conn: asyncpg.Connection, tenant: str, *, window_seconds: int = 86400
) -> dict[str, Any]:
    """How a tenant's endpoints fare over the last ``window_seconds``: attempts, success rate,
    latency, pending and dead deliveries, and how many events were enqueued for the tenant.

    A tenant nothing carries has zeros everywhere (tenants are not registered)."""
    validate_tenant(tenant)
    with translate_errors():
        row = await conn.fetchrow(QUERIES["tenant_stats"], tenant, float(window_seconds))
    assert row is not None
    latency = row["latency_ms"] or [None, None]
    return {
        "tenant": tenant,
        "window_seconds": window_seconds,
        "endpoints": row["endpoints"],
        "events": row["events"],
        "attempts": row["attempts"],
        "delivered": row["delivered"],
        "success_rate": row["delivered"] / row["attempts"] if row["attempts"] else None,
        "latency_p50_ms": latency[0],
        "latency_p99_ms": latency[1],
        "pending": row["pending"],
        "dead": row["dead"],
    }
