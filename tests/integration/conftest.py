"""Integration fixtures: a real HTTP receiver on loopback and relays on the test database."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from pgcourier.runtime import Runtime, running
from tests.integration.helpers import Receiver, relay_settings


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.base_url = f"http://127.0.0.1:{server.port}"
    return rec


@pytest.fixture
def relay(dsn: str) -> Callable[..., contextlib.AbstractAsyncContextManager[Runtime]]:
    """``async with relay(**settings) as rt:`` runs one relay on the test database."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Runtime]:
        return running(relay_settings(dsn, **overrides), dsn)

    return start
