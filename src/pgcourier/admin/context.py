"""What the admin routes share, wired by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg
from aiohttp import web

from pgcourier.metrics import Metrics


class ListenerState(Protocol):
    """What readiness needs to know about the LISTEN connection."""

    @property
    def connected(self) -> bool: ...


@dataclass(frozen=True)
class AdminContext:
    """The pool, the metrics, the listener, and the bearer token guarding /api/v1 (None: the
    server only binds loopback and the API is open to local callers)."""

    pool: asyncpg.Pool
    metrics: Metrics
    listener: ListenerState | None = None
    token: str | None = None
    # Largest request body accepted (413 beyond): room for the largest payload allowed.
    max_body: int = 1024 * 1024
    # False: /health, /ready and /metrics need the token too.
    open_operations: bool = True


CONTEXT = web.AppKey("context", AdminContext)
