"""The completion writer: records finished attempts in batches, one short transaction each.

Workers hand each attempt's outcome here and move on; the writer lets a burst share one
transaction (a short flush window), bounds every batch, retries through database outages, and
isolates a completion the database refuses so that it cannot hold back everyone else's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence

import structlog

from pgcourier import policy
from pgcourier.errors import InvalidInput
from pgcourier.model import ERROR_LIMIT, AttemptResult, Completion, Job, storable_text
from pgcourier.store import RelayStore
from pgcourier.tasks import first, log_failure

log = structlog.get_logger("pgcourier.relay")


class Completer:
    """Writes outcomes for one relay until it closes and nothing is pending."""

    #: Most outcomes written in one transaction.
    MAX_WRITE_BATCH = 500

    def __init__(
        self,
        *,
        store: RelayStore,
        relay_id: uuid.UUID,
        held: dict[int, Job],
        decide: Callable[[Job, AttemptResult], policy.Outcome],
        on_recorded: Callable[[Sequence[Completion]], None],
        on_flushed: Callable[[], None],
        flush_interval: float,
        retry_interval: float,
    ) -> None:
        self._store = store
        self._relay_id = relay_id
        self._held = held
        self._decide = decide
        self._on_recorded = on_recorded
        self._on_flushed = on_flushed
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self.pending: list[Completion] = []
        self._ready = asyncio.Event()
        self.closing = asyncio.Event()
        # Set when a stop begins (loop time): past it, nothing is retried any more.
        self.deadline: float | None = None

    def add(self, completion: Completion) -> None:
        self.pending.append(completion)
        self._ready.set()

    async def run(self) -> None:
        """Write finished attempts in batches until the relay closes and nothing is pending."""
        while True:
            if not self.pending:
                if self.closing.is_set():
                    return
                self._ready.clear()
                await first(self._ready.wait(), self.closing.wait())
                continue
            # A short window lets a burst of completions share one transaction.
            await asyncio.sleep(self._flush_interval)
            await self._flush()

    async def _flush(self) -> None:
        while self.pending:
            # Bounded batches: a backlog written as one statement gets slower than linearly,
            # which grows the next backlog, until leases expire and everything is sent again.
            batch = self.pending[: self.MAX_WRITE_BATCH]
            del self.pending[: self.MAX_WRITE_BATCH]
            if not await self._write(batch):
                # Stopping, past the deadline: their leases are handed back (or expire).
                unwritten = sum(c.job.delivery_id in self._held for c in batch)
                log.error(
                    "giving up on completions at shutdown; these deliveries will be sent again",
                    n=unwritten + len(self.pending),
                )
                self.pending.clear()
                return
            self._on_flushed()

    async def _write(self, batch: list[Completion], *, salvage: bool = True) -> bool:
        """Record ``batch``; False if a stop's deadline passed first. Each store call is one
        transaction, so nothing is ever recorded twice."""
        while True:
            try:
                await self._store.complete(self._relay_id, batch)
            except InvalidInput as exc:
                # The database refuses the content (SQLSTATE class 22/23): the same batch would
                # be refused forever, holding every endpoint's outcomes (issue 15). Halve it to
                # record all it can, down to the one completion at fault.
                if len(batch) > 1:
                    half = len(batch) // 2
                    written = await self._write(batch[:half], salvage=salvage)
                    return written and await self._write(batch[half:], salvage=salvage)
                if salvage:
                    return await self._write([self._unstorable(batch[0], exc)], salvage=False)
                # Refused even without anything the receiver sent: a bug. Stop renewing its
                # lease, so that the delivery is tried again when the lease runs out.
                log.error(
                    "the database refuses this outcome; the delivery will be sent again",
                    delivery_id=batch[0].job.delivery_id,
                    error=str(exc),
                )
                self._held.pop(batch[0].job.delivery_id, None)
                return True
            except Exception as exc:
                # The database is unreachable or failing (or the driver raised something nobody
                # translated): keep the batch and try again. If this outlasts the lease, another
                # relay may deliver again (at-least-once, same webhook-id).
                log_failure("writing completions failed; retrying", exc, n=len(batch))
                if not await self._pause_before_retry():
                    return False
                continue
            # Forget what was just recorded, at once: a claim may lease a retry again as soon as
            # it is committed, and one still held would be taken for a duplicate and skipped.
            for c in batch:
                self._held.pop(c.job.delivery_id, None)
            self._on_recorded(batch)
            return True

    def _unstorable(self, c: Completion, exc: InvalidInput) -> Completion:
        """The attempt recorded as a failure without what the database refused, following the
        retry schedule like any failure."""
        error = storable_text(f"response not storable: {exc.message}", ERROR_LIMIT, one_line=True)
        permanent = c.result.permanent
        result = dataclasses.replace(
            c.result,
            error=error,
            response_body=None,
            permanent=None if permanent is None else storable_text(permanent, ERROR_LIMIT),
        )
        log.warning(
            "attempt recorded without its response",
            delivery_id=c.job.delivery_id,
            endpoint_id=str(c.job.endpoint_id),
            error=error,
        )
        return Completion(c.job, result, self._decide(c.job, result))

    async def _pause_before_retry(self) -> bool:
        """Wait before writing again; False once a stop's deadline has passed."""
        if self.deadline is None:
            await asyncio.sleep(self._retry_interval)
            return True
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        await asyncio.sleep(min(self._retry_interval, left))
        return True
