"""What the admin routes share, wired by the composition root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
from aiohttp import web

from pgcourier import db
from pgcourier.errors import DatabaseUnavailable, PgCourierError
from pgcourier.metrics import Metrics
from pgcourier.sealing import Keyring
from pgcourier.settings import admin_token_problem


class ListenerState(Protocol):
    """What readiness needs to know about the LISTEN connection."""

    @property
    def connected(self) -> bool: ...


class SecretsState(Protocol):
    """What readiness needs to know about secrets the relay could not open (unopened.py)."""

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class AdminContext:
    """The pool, the metrics, the listener, and the bearer token guarding /api/v1 (None: the
    server only binds loopback, the API is open to local callers, and requests from other
    sites or under other host names are refused)."""

    pool: asyncpg.Pool
    metrics: Metrics
    listener: ListenerState | None = None
    token: str | None = field(default=None, repr=False)  # never in a repr or traceback
    # Largest request body accepted (413 beyond): room for the largest payload allowed.
    max_body: int = 1024 * 1024
    # False: /health, /ready, /metrics and /openapi.json need the token too.
    open_operations: bool = True
    # False: no console under /ui/ (PGCOURIER_UI_ENABLED).
    ui_enabled: bool = True
    # PGCOURIER_SECRET_KEY: endpoint secrets and Slack tokens are stored encrypted with it.
    keyring: Keyring | None = field(default=None, repr=False)
    # The relay's endpoints whose secrets its keys do not open lately (None: no relay here).
    unopened_secrets: SecretsState | None = None

    def __post_init__(self) -> None:
        # The settings already refuse such tokens; checking here too means no other way of
        # building the app can make an empty token mean "no authentication".
        problem = None if self.token is None else admin_token_problem(self.token)
        if problem:
            raise ValueError(f"PGCOURIER_ADMIN_TOKEN {problem}")

    @property
    def has_token(self) -> bool:
        """Whether requests must carry the bearer token (the one test for it)."""
        return self.token is not None


CONTEXT = web.AppKey("context", AdminContext)


@contextlib.asynccontextmanager
async def pooled_connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection from the admin pool for one request, for the API and the console alike. Not
    getting one (refused, wrong password, no such database) is the database being unavailable:
    a 503, never a 500."""
    try:
        with db.translate_errors():
            conn: asyncpg.Connection = await pool.acquire()
    except PgCourierError as exc:
        if isinstance(exc, DatabaseUnavailable):
            raise
        raise DatabaseUnavailable(str(exc)) from exc
    try:
        yield conn
    finally:
        await pool.release(conn)
