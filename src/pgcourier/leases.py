"""The deliveries one relay holds, and the task that keeps their leases and its registration.

A lease is how long other relays leave a delivery alone. While an attempt is queued, in flight or
waiting for its outcome to be written, the relay renews the lease every third of its length; a
relay that stops renewing (killed, stalled) loses its deliveries to the others when it runs out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import structlog

from pgcourier.model import Job
from pgcourier.store import RelayStore
from pgcourier.tasks import first, log_failure

log = structlog.get_logger("pgcourier.relay")


class Leases:
    """What this relay holds (``held``, by delivery id) and the lease keeper that renews it."""

    def __init__(
        self,
        *,
        store: RelayStore,
        relay_id: uuid.UUID,
        lease: float,
        on_reregistered: Callable[[], None],
    ) -> None:
        self._store = store
        self._relay_id = relay_id
        self._lease = lease
        self._on_reregistered = on_reregistered
        # Jobs leased to this relay whose outcome is not written yet, by delivery id.
        self.held: dict[int, Job] = {}

    async def keep(self, closing: asyncio.Event) -> None:
        """Renew held leases every third of the lease; heartbeat; forget dead relays."""
        interval = min(self._lease / 3, 10.0)
        while not closing.is_set():
            await first(closing.wait(), asyncio.sleep(interval))
            if closing.is_set():
                return
            try:
                held = list(self.held)
                if held:
                    kept = await self._store.renew(self._relay_id, held, self._lease)
                    lost = [i for i in held if i not in kept and i in self.held]
                    if lost:
                        log.warning("leases lost to another relay", delivery_ids=lost[:20])
                if not await self._store.heartbeat(self._relay_id):
                    # Our row vanished (the UNLOGGED table is emptied by a crash restart).
                    await self._store.register(self._relay_id)
                    self._on_reregistered()
                await self._store.reap(older_than=max(6 * interval, 30.0), keep=self._relay_id)
            except Exception as exc:
                log_failure("lease renewal failed", exc)

    async def release_leftover(self) -> None:
        """Hand back the leases of deliveries whose outcome was not written."""
        leftover = list(self.held)
        if not leftover:
            return
        try:
            await self._store.release(self._relay_id, leftover)
            log.info("released leases", n=len(leftover))
        except Exception as exc:
            log_failure("could not release leases; they will expire", exc)
        for i in leftover:
            self.held.pop(i, None)
