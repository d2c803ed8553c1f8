"""PgQueuer's side: a consumer process whose job POSTs the job's payload to the receiver.

    python -m benchlib.pgq_consumer DSN URL uvloop|asyncio

Set up as issue 11 measured it: PgQueuer's QueueManager on one asyncpg connection (as its own
examples do), ``batch_size=100``, the job an aiohttp POST of the payload (the same envelope bytes
pgcourier sends) through one session whose connector allows 100 connections, a non-2xx answer
raising (so PgQueuer records it as failed, as pgcourier would retry it). The event loop is
uvloop when asked, as ``pgq run`` does whenever uvloop is installed (PgQueuer depends on it).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import asyncpg
from pgqueuer.core.qm import QueueManager
from pgqueuer.domain.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "webhook"
BATCH_SIZE = 100
CONNECTION_LIMIT = 100


async def consume(dsn: str, url: str) -> None:
    conn = await asyncpg.connect(dsn)
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint(ENTRYPOINT)
        async def post(job: Job) -> None:
            async with session.post(url, data=job.payload, headers=headers) as response:
                await response.read()
                response.raise_for_status()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, qm.shutdown.set)
        await qm.run(batch_size=BATCH_SIZE)
    await conn.close()


def main() -> None:
    dsn, url, loop = sys.argv[1:4]
    if loop == "uvloop":
        import uvloop

        uvloop.run(consume(dsn, url))
    else:
        asyncio.run(consume(dsn, url))


if __name__ == "__main__":
    main()
