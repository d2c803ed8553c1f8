"""A TCP proxy in front of the test database that can freeze: the database host stops answering
(a hung VM, a black-holed network) while every connection stays open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class FreezingProxy:
    def __init__(self, dsn: str) -> None:
        """A proxy to the server of ``dsn`` (TCP, or a Unix socket given as ?host=/dir)."""
        self._dsn = dsn
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    def freeze(self) -> None:
        """From now on nothing passes either way; connections stay open."""
        self._flowing.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Owned from the start: a connection accepted while frozen (a pool reconnecting) waits
        # here, and only the proxy's end closes it and ends this wait (the server's close does
        # neither; left to the garbage collector, its socket's ResourceWarning failed whichever
        # test ran next in the process).
        self._writers.append(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._tasks.add(handler)
            handler.add_done_callback(self._tasks.discard)
        await self._flowing.wait()
        parts = urlsplit(self._dsn)
        query = dict(parse_qsl(parts.query))
        port = int(query.get("port") or parts.port or 5432)
        host = query.get("host") or parts.hostname or "127.0.0.1"
        if host.startswith("/"):
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers.append(up_writer)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FreezingProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for writer in self._writers:
                writer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def proxied(dsn: str, proxy: FreezingProxy) -> str:
    """``dsn`` pointed at the proxy (same user, database and other options)."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
