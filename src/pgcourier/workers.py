"""The delivery workers: a fixed pool of ``max_in_flight`` tasks that run the HTTP attempts.

The claim loop (:mod:`pgcourier.relay`) hands each claimed job to :meth:`DeliveryWorkers.submit`;
a worker sends it and passes the result to the relay's ``attempted`` callback, which decides the
outcome and queues it for the completer. The pool counts the jobs it has in hand so that the claim
loop knows how much room it has, and wakes the loop when an attempt frees room.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from pgcourier.delivery import Transport
from pgcourier.model import AttemptResult, Job
from pgcourier.tasks import log_failure

log = structlog.get_logger("pgcourier.relay")


class DeliveryWorkers:
    """Runs the HTTP attempts of claimed jobs, at most ``max_in_flight`` at once."""

    def __init__(
        self,
        *,
        transport: Transport,
        held: dict[int, Job],
        max_in_flight: int,
        attempted: Callable[[Job, AttemptResult], None],
    ) -> None:
        self._transport = transport
        # Jobs leased to this relay whose outcome is not written yet (shared with the lease
        # keeper and the completer), by delivery id.
        self._held = held
        self._size = max_in_flight
        self._attempted = attempted
        # Claimed jobs wait here for one of max_in_flight worker tasks (a fixed pool: creating a
        # task per delivery cost more than the rest of the loop together).
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # Jobs claimed whose HTTP attempt has not finished (queued or in flight). The relay keeps
        # up to `prefetch` of them so that HTTP never waits for a claim round trip, and claims
        # again once `min_claim` slots are free so that claims stay batched.
        self._active = 0
        self._prefetch = 2 * max_in_flight
        self.min_claim = max(1, max_in_flight // 4)
        # Set when an attempt ends and leaves at least `min_claim` free; the claim loop clears it.
        self.slot_freed = asyncio.Event()

    @property
    def room(self) -> int:
        """How many more jobs the claim loop may hand over now."""
        return self._prefetch - self._active

    def spawn(self) -> None:
        """Start the worker tasks. They run until :meth:`drain` cancels them."""
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"pgcourier-worker-{i}")
            for i in range(self._size)
        ]

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.delivery_id in self._held:
                continue  # our own lease, re-claimed after it lapsed: it is already in flight
            self._held[job.delivery_id] = job
            self._active += 1
            self._queue.put_nowait(job)

    async def drain(self, seconds: float) -> None:
        """Let attempts in flight finish, for up to ``seconds``, then end the workers.

        Jobs still queued stay in ``held`` with no outcome: the relay hands their leases back.
        """
        # Jobs still queued were never sent: hand them back at once rather than start them now.
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._active -= 1
        in_flight = self._active
        if in_flight:
            log.info("draining in-flight deliveries", n=in_flight)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), seconds)
        for worker in self._tasks:
            worker.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._deliver(job)
            except Exception as exc:
                # A bug after the attempt (deciding, logging, metrics): its outcome is lost, so
                # stop renewing its lease and let it be sent again when the lease runs out,
                # rather than hold it forever. The worker itself carries on.
                log_failure(
                    "delivery failed; it will be sent again", exc, delivery_id=job.delivery_id
                )
                self._held.pop(job.delivery_id, None)
            finally:
                self._queue.task_done()

    async def _deliver(self, job: Job) -> None:
        try:
            # (A job whose secret our keys do not open never gets here: the store hands it back.)
            result = await self._transport.send(job)
        except Exception as exc:
            # Transports report failures as values; an exception here is a bug. Record it as
            # a failed attempt so the delivery follows its retry schedule instead of sitting
            # in held, its lease renewed forever.
            # A plain traceback, never a renderer's "locals" view: frames hold secrets and tokens.
            log.error(
                "transport raised",
                delivery_id=job.delivery_id,
                traceback="".join(traceback.format_exception(exc)),
            )
            result = AttemptResult(
                started_at=datetime.now(UTC),
                duration=0.0,
                error=f"internal error: {type(exc).__name__}: {exc}",
            )
        finally:
            # The slot frees when the attempt ends, not when its outcome is written: claiming
            # more must not wait for the completion round trip.
            self._active -= 1
            if self.room >= self.min_claim:
                self.slot_freed.set()
        self._attempted(job, result)
