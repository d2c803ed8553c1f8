"""A stop keeps its deadline when the database host stops answering mid-run.

The relay's pool, listener and in-flight writes all sit on connections to a host that no longer
answers (a hung VM, a black-holed network): nothing is refused, nothing times out by itself. A
SIGTERM must still end the process within shutdown_timeout plus the grace for the last write,
not wait for TCP to give up (minutes).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.relay import Relay
from pgcourier.runtime import running
from tests.integration.helpers import Receiver, add_endpoint, relay_settings
from tests.integration.proxy import FreezingProxy, proxied

pytestmark = pytest.mark.timeout(90)


async def test_stop_keeps_its_deadline_when_the_database_host_hangs(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    receiver.delay["/slow"] = 1.5  # answers arrive after the database froze
    await add_endpoint(conn, receiver.url("/slow"))
    shutdown_timeout = 2.0
    async with FreezingProxy(dsn).serving() as proxy:
        settings = relay_settings(proxied(dsn, proxy), shutdown_timeout=shutdown_timeout)
        loop = asyncio.get_running_loop()

        async def run_and_stop() -> float:
            async with running(settings, proxied(dsn, proxy)):
                for i in range(5):
                    await ops.enqueue(conn, "order.created", {"i": i})
                await receiver.wait_count(5, "/slow")
                # Every request is in flight; now the database host stops answering. The
                # outcomes can never be written, the leases never handed back.
                proxy.freeze()
                stopped_at = loop.time()
            return loop.time() - stopped_at

        elapsed = await asyncio.wait_for(run_and_stop(), timeout=60)
    # The drain waits for the answers (1.5 s), the completer gives up at the deadline plus its
    # grace; closing the pool and the listener may take a moment more, never minutes.
    budget = shutdown_timeout + Relay.SHUTDOWN_GRACE + 3.0
    assert elapsed < budget, f"stop took {elapsed:.1f}s with the database hung (budget {budget}s)"
    # Nothing was lost: the deliveries are still in the queue, leased, for another relay later.
    assert await conn.fetchval("SELECT count(*) FROM courier.queue") == 5
