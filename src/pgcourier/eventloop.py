"""Which asyncio event loop the long-running commands use.

uvloop (libuv) runs asyncpg's protocol and aiohttp's sockets with a fraction of the default
loop's CPU per callback; the relay is a loop of small callbacks, so it is the cheapest lever on
CPU per delivery (issue 11). It is a dependency wherever it builds (not on Windows); ``auto``
falls back to asyncio's own loop where it is missing. Tests run the same code on asyncio's loop
(pytest-asyncio) and, through the relay processes they start, on uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from pgcourier.errors import ConfigurationError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice``: uvloop's, or None for asyncio's default loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "PGCOURIER_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: LoopChoice) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
