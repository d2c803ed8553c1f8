"""Integration fixtures: a real HTTP receiver on loopback and relays on the test database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.metrics import Metrics
from pgcourier.runtime import Runtime, running
from tests.integration.helpers import TOKEN, Receiver, relay_settings
from tests.scheduling import unit_of_work


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The scheduler's rule, so that `-m serial` selects exactly what it keeps on one worker.
    for item in items:
        if unit_of_work(item.nodeid) == "serial":
            item.add_marker(pytest.mark.serial)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.base_url = f"http://127.0.0.1:{server.port}"
    return rec


@pytest.fixture
async def api(aiohttp_client: Any, dsn: str) -> AsyncIterator[Any]:
    """A test client on the real admin app (token :data:`TOKEN`) over the test database."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield await aiohttp_client(create_app(AdminContext(pool, Metrics(), None, TOKEN)))
    finally:
        await pool.close()


@pytest.fixture
def relay(dsn: str) -> Callable[..., contextlib.AbstractAsyncContextManager[Runtime]]:
    """``async with relay(**settings) as rt:`` runs one relay on the test database."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Runtime]:
        return running(relay_settings(dsn, **overrides), dsn)

    return start
