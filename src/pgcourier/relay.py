"""The relay loop: wait (notify | poll | retry timer | stop) -> claim -> deliver -> complete.

Concurrency model (one relay process):

* one claim loop (here) leases work from Postgres and hands each job to the workers;
* a fixed pool of ``max_in_flight`` workers (:mod:`pgcourier.workers`) runs the HTTP attempts,
  fed by a queue that the claim loop keeps up to twice that deep, so that sending never waits on
  a claim;
* one completer (:mod:`pgcourier.completer`) writes finished attempts in batches, one short
  transaction per batch: no transaction is ever open across HTTP;
* one lease keeper (:mod:`pgcourier.leases`) renews the leases of everything this relay holds,
  and heartbeats.

All of them live in one TaskGroup owned by :meth:`Relay.run`. None of them ends for a database
fault, whatever the driver raises (:mod:`pgcourier.tasks`): the relay exits only when stopped.
Stopping (:mod:`pgcourier.stopping`) drains in-flight deliveries (up to ``shutdown_timeout``),
writes their outcomes, hands back leases on whatever is left, and returns, within
``shutdown_timeout`` plus ``2 * SHUTDOWN_GRACE`` whatever the database and the receivers do.
Anything a killed relay held comes back on its own when its leases run out.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from pgcourier import attempts, policy, stopping
from pgcourier.completer import Completer
from pgcourier.delivery import Transport
from pgcourier.going_idle import IdleTurn
from pgcourier.leases import Leases
from pgcourier.metrics import Metrics
from pgcourier.model import AttemptResult, Completion, Job
from pgcourier.store import RelayStore
from pgcourier.tasks import first, log_failure, supervised
from pgcourier.wakeup import Alarm
from pgcourier.workers import DeliveryWorkers

log = structlog.get_logger("pgcourier.relay")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Tuning of one relay; see :class:`pgcourier.settings.Settings` for meanings and defaults."""

    poll_interval: float = 1.0
    retry_schedule: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    retry_jitter: float = policy.DEFAULT_JITTER
    max_in_flight: int = 128
    lease: float = 60.0
    shutdown_timeout: float = 15.0
    completion_flush_interval: float = 0.005
    retry_after_cap: float = policy.DEFAULT_RETRY_AFTER_CAP
    # How long a failing database call waits before it is tried again.
    db_retry_interval: float = 1.0


class Relay:
    """Moves committed events to their endpoints. Several relays may share one database."""

    #: Most outcomes written in one transaction.
    MAX_WRITE_BATCH = Completer.MAX_WRITE_BATCH
    #: Seconds between looks at due work that endpoints' limits or ordering keys hold back.
    HELD_BACK_RECHECK = 0.05
    #: Events one fan-out of a backlog takes, and how often a relay with no room for more work
    #: (or whose claim took nothing) looks for a backlog (see _fan_out_backlog).
    FAN_OUT_BATCH = 1000
    FAN_OUT_RECHECK = 0.1
    #: Seconds a stop allows past ``shutdown_timeout`` for the last write of outcomes, and again
    #: for handing back leases and deregistering.
    SHUTDOWN_GRACE = 1.0

    def __init__(
        self,
        *,
        store: RelayStore,
        transport: Transport,
        config: RelayConfig,
        relay_id: uuid.UUID | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.id = relay_id or uuid.uuid4()
        self._store = store
        self._config = config
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._alarm = Alarm(poll_interval=config.poll_interval, metrics=metrics)
        self._leases = Leases(
            store=store, relay_id=self.id, lease=config.lease, on_reregistered=self._reregistered
        )
        # Jobs leased to this relay whose outcome is not written yet, by delivery id.
        held = self._leases.held
        self._workers = DeliveryWorkers(
            transport=transport,
            held=held,
            max_in_flight=config.max_in_flight,
            attempted=self._attempted,
        )
        self._completer = Completer(
            store=store,
            relay_id=self.id,
            held=held,
            decide=self._decide,
            on_recorded=self._recorded,
            on_flushed=self._flushed,
            flush_interval=config.completion_flush_interval,
            retry_interval=config.db_retry_interval,
        )
        self._background: list[asyncio.Task[None]] = []
        # Whether our row in courier.relays says idle, as far as we know. A NOTIFY means some
        # producer flipped it to busy; _notifications lets _go_idle see one that lands while
        # its own UPDATE is in flight.
        self._idle = False
        self._notifications = 0
        # Due work exists that the last claim could not take (endpoint limits, ordering keys).
        self._held_back = False
        # Whether the last fan-out of a backlog took a full batch, and when to look again.
        self._fan_out_behind = False
        self._next_fan_out_check = 0.0
        self.delivered = 0  # attempts that ended delivered, for callers that wait on progress
        self.wakeups = self._alarm.counts  # wake-ups by source, for tests and callers

    # -- waking ------------------------------------------------------------------------------

    def notify(self) -> None:
        """A NOTIFY arrived (or the listener reconnected): look for work now.

        The producer that sent it has already flipped our idle flag to busy (see
        courier.outbox_wake), so we must mark ourselves idle again before the next sleep.
        """
        self._idle = False
        self._notifications += 1
        self._alarm.ring("notify")

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then drain and return."""
        await stopping.retrying(
            "register", lambda: self._store.register(self.id), stop, self._config.db_retry_interval
        )
        log.info("relay started", relay_id=str(self.id))
        try:
            async with asyncio.TaskGroup() as group:
                retry = self._config.db_retry_interval
                self._background = [
                    group.create_task(
                        supervised("completer", self._completer.run, retry_interval=retry),
                        name="pgcourier-completer",
                    ),
                    group.create_task(
                        supervised(
                            "lease keeper",
                            lambda: self._leases.keep(self._completer.closing),
                            retry_interval=retry,
                        ),
                        name="pgcourier-lease-keeper",
                    ),
                ]
                self._workers.spawn()
                try:
                    # The claim loop looks at ``stop`` between round trips; one to a database
                    # host that stopped answering would hold the stop for command_timeout (60 s),
                    # so the stop also cancels it. A claim cut off this way may have committed:
                    # its leases run out and another relay delivers (same webhook-id).
                    await first(
                        supervised(
                            "claim loop", lambda: self._claim_loop(stop), retry_interval=retry
                        ),
                        stop.wait(),
                    )
                finally:
                    await stopping.drain(
                        workers=self._workers,
                        completer=self._completer,
                        background=self._background,
                        store=self._store,
                        shutdown_timeout=self._config.shutdown_timeout,
                        grace=self.SHUTDOWN_GRACE,
                    )
        finally:
            self._alarm.cancel()
            await stopping.hand_back(
                leases=self._leases, store=self._store, relay_id=self.id, grace=self.SHUTDOWN_GRACE
            )
            log.info("relay stopped", relay_id=str(self.id))

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        cfg = self._config
        woke = False  # whether the relay slept since its last claim
        while not stop.is_set():
            free = self._workers.room
            if free < self._workers.min_claim:
                # Enough work queued or in flight: wait until attempts finish and free room.
                # Cleared before anything is awaited: room freed during the fan-out below sets
                # it again, so that wake-up is not lost (it was: a relay with nothing in flight
                # slept until stopped).
                self._workers.slot_freed.clear()
                if await self._fan_out_backlog():
                    continue
                await first(stop.wait(), self._workers.slot_freed.wait())
                continue
            # Clear before claiming: a NOTIFY that lands during the claim sets it again and the
            # next sleep returns at once, so no wake-up is lost between claim and sleep.
            self._alarm.clear()
            try:
                jobs = await self._store.claim(self.id, free, cfg.lease)
            except Exception as exc:
                log_failure("claim failed; retrying", exc)
                await first(stop.wait(), asyncio.sleep(cfg.db_retry_interval))
                continue
            after_sleep, woke = woke, False
            if jobs:
                self._take(jobs)
                if not (after_sleep and len(jobs) < free and not self._idle):
                    continue
                # Woken, and the claim took less than it could: at a trickle (an event per
                # wake-up) the next claim finds nothing. Going idle claims once more anyway,
                # so go idle now and spare that round trip.
            elif await self._fan_out_backlog():
                continue  # new deliveries: claim them before going idle
            if not self._idle:
                # Going idle: from now on producers notify us. The same round trip claims once
                # more, for anything committed by a producer that saw us busy, and reads the
                # next due time for our timer (0020).
                turn = await self._go_idle(self._workers.room)
                if turn.jobs:
                    self._take(turn.jobs)
                    continue
                if turn.written and (not turn.claimed or turn.rows):
                    # Flagged idle, but the claim must be a statement of its own, or it
                    # returned only rows buried as poison or handed back: claim again.
                    continue
                if turn.written:
                    self._arm_due(turn.next_due)
                    await self._alarm.sleep(stop)
                    woke = True
                    continue
            await self._arm_next_due()
            await self._alarm.sleep(stop)
            woke = True

    def _take(self, jobs: Sequence[Job]) -> None:
        # No need to mark ourselves busy: while we are flagged idle, the first producer to
        # commit flips the flag for us (and notifies once).
        if self._metrics:
            self._metrics.claim_batch_size.observe(len(jobs))
        self._workers.submit(jobs)

    async def _fan_out_backlog(self) -> bool:
        """Fan out a batch of a backlog of events; True if it took any.

        Claims fan out ~100 events each, and claims slow down when the work in hand is held
        back (an endpoint at its limit, no room in the relay): a flood for one slow endpoint
        was then fanned out at the pace of its deliveries, and every event committed after it,
        for any endpoint or tenant, waited behind it (issue 13). Asked when the claim took
        nothing or there is no room for more work; at most every FAN_OUT_RECHECK seconds
        unless the last batch was full (a backlog is then fanned out batch after batch,
        claims in between).
        """
        now = asyncio.get_running_loop().time()
        if not self._fan_out_behind and now < self._next_fan_out_check:
            return False
        self._next_fan_out_check = now + self.FAN_OUT_RECHECK
        try:
            taken = await self._store.fan_out(self.FAN_OUT_BATCH)
        except Exception as exc:
            log_failure("fan-out failed; retrying", exc)
            self._fan_out_behind = False
            return False
        self._fan_out_behind = taken >= self.FAN_OUT_BATCH
        return taken > 0

    async def _go_idle(self, room: int) -> IdleTurn:
        """Flag ourselves idle so that producers notify us, and claim up to ``room`` (see
        :meth:`RelayStore.go_idle`). Not ``written`` if the write failed or was not made: then
        look again shortly (producers that read us busy do not notify)."""
        seen = self._notifications
        try:
            turn = await self._store.go_idle(self.id, room, self._config.lease)
        except Exception as exc:
            log_failure("could not update relay state", exc)
            return IdleTurn(written=False)
        if not turn.written:
            # Another transaction holds our row, flagged busy (0019): claim again soon, as a
            # poll at a short interval, until the row can be written.
            self._alarm.arm(self.HELD_BACK_RECHECK)
        elif self._notifications == seen:
            # A notification during the call may come from a producer that flipped the flag
            # back after it: then the flag is busy again and we must not believe it idle (we
            # would sleep until the poll). Believing it busy when it is idle only costs one
            # more round trip.
            self._idle = True
        return turn

    async def _arm_next_due(self) -> None:
        try:
            due = await self._store.next_due()
        except Exception as exc:
            # The poll interval is the fallback: sleeping without the timer only costs latency.
            log_failure("could not read the next due time", exc)
            return
        self._arm_due(due)

    def _arm_due(self, due: datetime | None) -> None:
        if due is not None:
            # Due already, yet the claim took nothing: the work is held back by an endpoint's
            # limit or an ordering key in flight. Completions wake us for our own; look again
            # shortly for other relays' (never spin).
            delay = (due - datetime.now(UTC)).total_seconds()
            self._held_back = delay <= 0
            self._alarm.arm(max(delay, self.HELD_BACK_RECHECK) + 0.001)
        else:
            self._held_back = False

    # -- after attempts --------------------------------------------------------------------

    def _attempted(self, job: Job, result: AttemptResult) -> None:
        """A worker finished an attempt: decide its outcome, log and count it, and queue it for
        the completer. (An exception here reaches the worker, which gives the job up.)"""
        outcome = self._decide(job, result)
        attempts.log_attempt(job, result, outcome)
        if self._metrics:
            attempts.observe(self._metrics, job, result, outcome)
        self._completer.add(Completion(job, result, outcome))

    def _decide(self, job: Job, result: AttemptResult) -> policy.Outcome:
        return attempts.decide(job, result, self._config, self._rng)

    # -- after writes ----------------------------------------------------------------------

    def _recorded(self, batch: Sequence[Completion]) -> None:
        """Count what was just recorded; wake for the retries it scheduled."""
        for c in batch:
            if isinstance(c.outcome, policy.Delivered):
                self.delivered += 1
            elif isinstance(c.outcome, policy.Retry):
                self._alarm.arm(c.outcome.after)

    def _flushed(self) -> None:
        # Finished work frees room under endpoints' concurrency limits and lets the next
        # delivery of an ordering key go: if due work was held back, look again now.
        if self._held_back:
            self._alarm.ring("completion")

    def _reregistered(self) -> None:
        # The row came back busy, so producers will not notify us: look for work now, and the
        # claim loop marks us idle again before it sleeps (else we would hear of new events only
        # at the next poll).
        self._idle = False
        self._alarm.ring("reregistered")
