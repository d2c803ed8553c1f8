"""The relay loop against in-memory fakes of its two interfaces (store and transport).

The same loop runs against real Postgres and HTTP in tests/integration; here we pin the
concurrency rules that are hard to provoke there: bounded in-flight work, draining on stop,
releasing leases when draining times out, and never dropping an outcome when the database fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
import structlog.testing

from pgcourier.errors import DatabaseUnavailable, InvalidInput
from pgcourier.going_idle import IdleTurn
from pgcourier.model import AttemptResult, Completion, Job
from pgcourier.policy import Delivered, Retry
from pgcourier.relay import Relay, RelayConfig


def make_job(i: int) -> Job:
    return Job(
        delivery_id=i,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="t",
        payload="{}",
        created_at=datetime.now(UTC),
        url="http://x",
        secrets=("whsec_x",),
    )


class FakeStore:
    def __init__(self, jobs: Sequence[Job] = (), fail_completes: int = 0) -> None:
        self.queue = list(jobs)
        self.completed: list[Completion] = []
        self.batches = 0
        self.released: list[int] = []
        self.idle_calls: list[bool] = []
        self.calls: list[str] = []  # claim, go_idle and next_due, in order
        self.limits: list[int] = []  # what each claim and going idle asked for, in order
        self.fail_completes = fail_completes
        self.registered = False
        self.abandoned = False

    async def register(self, relay_id: uuid.UUID) -> None:
        self.registered = True

    async def heartbeat(self, relay_id: uuid.UUID) -> bool:
        return True

    async def deregister(self, relay_id: uuid.UUID) -> None:
        self.registered = False

    async def reap(self, older_than: float, *, keep: uuid.UUID | None = None) -> None:
        pass

    async def go_idle(self, relay_id: uuid.UUID, limit: int, lease: float) -> IdleTurn:
        # As courier.claim_going_idle: the flag, then a claim, then the next due time.
        self.calls.append("go_idle")
        self.limits.append(limit)
        self.idle_calls.append(True)
        jobs = self._take(limit)
        return IdleTurn(True, True, jobs, None)

    async def claim(self, relay_id: uuid.UUID, limit: int, lease: float) -> list[Job]:
        self.calls.append("claim")
        self.limits.append(limit)
        return self._take(limit)

    def _take(self, limit: int) -> list[Job]:
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        return taken

    async def next_due(self) -> datetime | None:
        self.calls.append("next_due")
        return None

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        if self.fail_completes:
            self.fail_completes -= 1
            raise DatabaseUnavailable("connection refused")
        self.completed.extend(batch)
        self.batches += 1

    async def renew(self, relay_id: uuid.UUID, ids: Sequence[int], lease: float) -> set[int]:
        return set(ids)

    def abandon(self) -> None:
        self.abandoned = True

    async def fan_out(self, limit: int) -> int:
        return 0  # the fake's claim hands out jobs directly: nothing to fan out

    async def release(self, relay_id: uuid.UUID, ids: Sequence[int]) -> None:
        self.released.extend(ids)


class FakeTransport:
    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.in_flight = 0
        self.max_seen = 0
        self.started = asyncio.Event()

    async def send(self, job: Job) -> AttemptResult:
        self.in_flight += 1
        self.max_seen = max(self.max_seen, self.in_flight)
        self.started.set()
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return AttemptResult(started_at=datetime.now(UTC), duration=self.delay, status=self.status)


CONFIG = RelayConfig(
    poll_interval=0.05,
    retry_schedule=(60.0,),
    retry_jitter=0,
    max_in_flight=4,
    shutdown_timeout=2.0,
    completion_flush_interval=0.001,
    db_retry_interval=0.01,
)


async def run_until(
    relay: Relay, stop: asyncio.Event, condition: Callable[[], object], timeout: float = 5
) -> None:
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def stop_once(relay: Relay, reached: asyncio.Event) -> None:
    """Run the relay, stop it as soon as ``reached`` is set, and wait for it to finish."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await reached.wait()
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_delivers_everything_in_batches_and_goes_idle() -> None:
    store = FakeStore([make_job(i) for i in range(20)])
    transport = FakeTransport(delay=0.01)
    relay = Relay(store=store, transport=transport, config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 20 and store.idle_calls)
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(20))
    assert all(isinstance(c.outcome, Delivered) for c in store.completed)
    assert store.batches < 20  # completions share transactions
    assert transport.max_seen <= CONFIG.max_in_flight
    assert store.idle_calls[0] is True
    assert relay.delivered == 20
    assert not store.registered  # deregistered on stop


async def test_failures_are_scheduled_for_retry() -> None:
    store = FakeStore([make_job(1)])
    relay = Relay(store=store, transport=FakeTransport(status=503), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: store.completed)
    [c] = store.completed
    assert c.outcome == Retry(60.0)
    assert c.result.status == 503


async def test_stop_drains_in_flight_deliveries() -> None:
    store = FakeStore([make_job(i) for i in range(3)])
    transport = FakeTransport(delay=0.3)
    relay = Relay(store=store, transport=transport, config=CONFIG)
    await stop_once(relay, transport.started)
    assert len(store.completed) == 3
    assert store.released == []


async def test_stop_releases_leases_of_deliveries_that_outlast_the_drain() -> None:
    store = FakeStore([make_job(i) for i in range(3)])
    transport = FakeTransport(delay=30)
    config = dataclasses.replace(CONFIG, shutdown_timeout=0.1)
    relay = Relay(store=store, transport=transport, config=config)
    await stop_once(relay, transport.started)
    assert store.completed == []
    assert sorted(store.released) == [0, 1, 2]


async def test_outcomes_survive_a_failing_database() -> None:
    store = FakeStore([make_job(i) for i in range(5)], fail_completes=3)
    relay = Relay(store=store, transport=FakeTransport(), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 5)
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(5))


async def test_in_flight_never_exceeds_the_limit() -> None:
    store = FakeStore([make_job(i) for i in range(50)])
    transport = FakeTransport(delay=0.02)
    relay = Relay(store=store, transport=transport, config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 50)
    assert transport.max_seen == CONFIG.max_in_flight


class BrokenTransport(FakeTransport):
    async def send(self, job: Job) -> AttemptResult:
        raise RuntimeError("bug in a transport")


async def test_a_transport_bug_becomes_a_failed_attempt_not_a_stuck_delivery() -> None:
    store = FakeStore([make_job(1)])
    relay = Relay(store=store, transport=BrokenTransport(), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: store.completed)
    [c] = store.completed
    assert c.result.error == "internal error: RuntimeError: bug in a transport"
    assert c.outcome == Retry(60.0)


class TimingOutStore(FakeStore):
    def __init__(self, jobs: Sequence[Job]) -> None:
        super().__init__(jobs)
        self.claim_failures = 2

    async def claim(self, relay_id: uuid.UUID, limit: int, lease: float) -> list[Job]:
        if self.claim_failures:
            self.claim_failures -= 1
            raise DatabaseUnavailable("the database did not answer in time")
        return await super().claim(relay_id, limit, lease)


async def test_claim_failures_are_retried_not_fatal() -> None:
    store = TimingOutStore([make_job(1)])
    relay = Relay(store=store, transport=FakeTransport(), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: store.completed)
    assert store.claim_failures == 0


class SlowCompleteStore(FakeStore):
    """Writing outcomes takes a while, so a stop lands in the middle of a write."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        super().__init__(jobs)
        self.writing = asyncio.Event()

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.writing.set()
        await asyncio.sleep(0.3)
        await super().complete(relay_id, batch)


async def test_stop_during_a_completion_write_does_not_release_those_leases() -> None:
    store = SlowCompleteStore([make_job(i) for i in range(5)])
    relay = Relay(store=store, transport=FakeTransport(), config=CONFIG)
    await stop_once(relay, store.writing)
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(5))
    # Releasing them would clear the lease the in-flight write depends on: sent twice.
    assert store.released == []


async def woken_once(
    store: FakeStore, jobs: Sequence[Job], done: Callable[[], object], delay: float = 0.0
) -> int:
    """Run a relay until it first goes idle, then commit ``jobs`` and notify it, as a producer
    does having flipped its flag; stop once ``done()``. The poll is a minute away, so a relay
    that sleeps when it should not never gets there. Returns how many store calls came
    before the wake-up."""
    config = dataclasses.replace(CONFIG, poll_interval=60.0)  # room for 8 (max_in_flight 4)
    relay = Relay(store=store, transport=FakeTransport(delay=delay), config=config)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(5):
            while not store.idle_calls:
                await asyncio.sleep(0.01)
            before = len(store.calls)
            store.queue.extend(jobs)
            relay.notify()
            while not done():
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    return before


async def test_going_idle_claims_and_reads_the_next_due_time_in_the_same_call() -> None:
    # Per event at an idle relay: the claim that takes it, and going idle, which claims once
    # more and reads the next due time itself (0020). It was five round trips: the claim, one
    # that found nothing, the flag, one more claim, the next due time. (Not yet woken, the
    # relay claims until a claim finds nothing, as under load.)
    store = FakeStore([make_job(0)])
    before = await woken_once(
        store, [make_job(1)], lambda: len(store.completed) == 2 and len(store.idle_calls) == 2
    )
    assert store.calls[:before] == ["claim", "claim", "go_idle"]
    assert store.calls == ["claim", "claim", "go_idle", "claim", "go_idle"]


class GoingIdleWithoutItsClaim(FakeStore):
    """Going idle once answers as it does when the claim could not be made in it ('unsettled',
    no settle wait, a lock wait: claimed False), not written ('busy'), or with a claim whose
    rows were all buried or handed back; meanwhile an event came that only a claim sees."""

    def __init__(self, turn: IdleTurn) -> None:
        super().__init__()
        self.turn = turn

    async def go_idle(self, relay_id: uuid.UUID, limit: int, lease: float) -> IdleTurn:
        if len(self.idle_calls) == 1:  # the relay's second going idle: after a first event
            self.calls.append("go_idle")
            self.idle_calls.append(True)
            self.queue.append(make_job(99))
            return self.turn
        return await super().go_idle(relay_id, limit, lease)


@pytest.mark.parametrize(
    "turn",
    [
        IdleTurn(written=True, claimed=False),
        IdleTurn(written=False),
        IdleTurn(written=True, claimed=True, rows=1),
    ],
    ids=["not-claimed", "not-written", "rows-but-no-jobs"],
)
async def test_going_idle_that_claimed_nothing_it_could_is_followed_by_a_claim(
    turn: IdleTurn,
) -> None:
    store = GoingIdleWithoutItsClaim(turn)
    # Job 99 too, claimed well before the poll.
    await woken_once(store, [make_job(0)], lambda: len(store.completed) >= 2)
    assert sorted(c.job.delivery_id for c in store.completed) == [0, 99]


async def test_going_idle_claims_only_the_room_left_after_the_claim_before_it() -> None:
    store = FakeStore()
    jobs = [make_job(i) for i in range(3)]
    before = await woken_once(store, jobs, lambda: len(store.idle_calls) >= 2, delay=0.2)
    # Woken, the claim took 3 of 8: going idle may take the 5 left, not 8 more.
    assert store.limits[before : before + 2] == [8, 5]


async def test_woken_for_a_full_claim_the_relay_claims_again_before_going_idle() -> None:
    # A claim that took all it could says nothing about what is left: claim again.
    store = FakeStore()
    jobs = [make_job(i) for i in range(8)]
    before = await woken_once(
        store,
        jobs,
        lambda: len(store.completed) == 8 and len(store.idle_calls) == 2,
        delay=0.05,
    )
    assert store.calls[before : before + 2] == ["claim", "claim"]
    assert store.calls[-1] == "go_idle"


class NotifiedWhileMarkingIdle(FakeStore):
    """A producer flips the relay back to busy (and notifies) while it is marking itself idle."""

    relay: Relay

    async def go_idle(self, relay_id: uuid.UUID, limit: int, lease: float) -> IdleTurn:
        turn = await super().go_idle(relay_id, limit, lease)
        if len(self.idle_calls) == 1:
            self.relay.notify()
        return turn


async def test_a_notify_during_marking_idle_is_not_overwritten() -> None:
    store = NotifiedWhileMarkingIdle()
    relay = Relay(store=store, transport=FakeTransport(), config=CONFIG)
    store.relay = relay
    # The flag in the database is "busy" again after that notify, so the relay must mark itself
    # idle once more before sleeping; otherwise no producer would ever notify it again.
    await run_until(relay, asyncio.Event(), lambda: len(store.idle_calls) >= 2, timeout=2)
    assert store.idle_calls[:2] == [True, True]


class BatchSizeStore(FakeStore):
    def __init__(self, jobs: Sequence[Job]) -> None:
        super().__init__(jobs)
        self.sizes: list[int] = []

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.sizes.append(len(batch))
        await asyncio.sleep(0.05)  # slow writes: completions pile up meanwhile
        await super().complete(relay_id, batch)


async def test_completions_are_written_in_bounded_batches() -> None:
    """A backlog of outcomes is written in chunks: one huge statement would get slower than
    linearly and let leases expire (then everything in it is sent again)."""
    store = BatchSizeStore([make_job(i) for i in range(3000)])
    config = dataclasses.replace(CONFIG, max_in_flight=1000)
    relay = Relay(store=store, transport=FakeTransport(), config=config)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 3000, timeout=10)
    assert max(store.sizes) <= relay.MAX_WRITE_BATCH
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(3000))


# -- a receiver must never stall the relay (issue 15) ------------------------------------------

NUL_REFUSED = 'invalid byte sequence for encoding "UTF8": 0x00'


class PostgresLikeStore(FakeStore):
    """Refuses, as Postgres does, any batch holding a NUL byte; or any batch holding one of
    ``refuse_ids``, whatever it holds."""

    def __init__(self, jobs: Sequence[Job], refuse_ids: Sequence[int] = ()) -> None:
        super().__init__(jobs)
        self.refuse_ids = set(refuse_ids)
        self.refused = 0
        self.writing = asyncio.Event()

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.writing.set()
        if any("\x00" in (c.result.response_body or "") for c in batch):
            self.refused += 1
            raise InvalidInput(NUL_REFUSED)
        if any(c.job.delivery_id in self.refuse_ids for c in batch):
            self.refused += 1
            raise InvalidInput("value too long for type character varying(10)")
        await super().complete(relay_id, batch)


class ScriptedTransport(FakeTransport):
    """Answers 200 "ok", except for the deliveries given their own result."""

    def __init__(self, results: dict[int, AttemptResult]) -> None:
        super().__init__()
        self.results = results

    async def send(self, job: Job) -> AttemptResult:
        self.started.set()
        await asyncio.sleep(0)
        return self.results.get(job.delivery_id) or AttemptResult(
            started_at=datetime.now(UTC), duration=0.001, status=200, response_body="ok"
        )


async def test_a_batch_refused_for_its_content_is_split_and_the_rest_recorded() -> None:
    bad = AttemptResult(
        started_at=datetime.now(UTC), duration=0.001, status=200, response_body="bad\x00body"
    )
    store = PostgresLikeStore([make_job(i) for i in range(10)])
    relay = Relay(store=store, transport=ScriptedTransport({3: bad}), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 10)
    # Everything recorded once: the refused batches were never retried as they were.
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(10))
    assert store.refused >= 1
    by_id = {c.job.delivery_id: c for c in store.completed}
    salvaged = by_id.pop(3)
    assert salvaged.result.response_body is None
    assert salvaged.result.error == f"response not storable: {NUL_REFUSED}"
    assert salvaged.result.status == 200
    assert salvaged.outcome == Retry(60.0)  # a failure like any other, on the retry schedule
    assert all(isinstance(c.outcome, Delivered) for c in by_id.values())
    assert relay.delivered == 9


class SlowRetryingStore(PostgresLikeStore):
    """Each write takes a while, and a retry is due again as soon as it is recorded."""

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        await asyncio.sleep(0.02)
        await super().complete(relay_id, batch)
        for c in batch:
            if isinstance(c.outcome, Retry):
                self.queue.append(dataclasses.replace(c.job, attempts=c.job.attempt))


async def test_a_retry_claimed_while_its_batch_is_being_split_is_not_lost() -> None:
    """Halving a refused batch takes several writes; a retry recorded by the first of them can
    be claimed again before the last: the relay must not take it for one still in flight."""
    bad = AttemptResult(
        started_at=datetime.now(UTC), duration=0.001, status=500, response_body="bad\x00body"
    )
    store = SlowRetryingStore([make_job(i) for i in range(4)])
    transport = ScriptedTransport({0: bad})
    transport.results.update(
        {i: dataclasses.replace(bad, response_body="nope") for i in range(1, 4)}
    )
    relay = Relay(store=store, transport=transport, config=CONFIG)
    # Two attempts each: a retry, then dead (the schedule has one retry).
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 8)
    assert sorted(c.job.delivery_id for c in store.completed) == [0, 0, 1, 1, 2, 2, 3, 3]


async def test_an_outcome_refused_even_without_its_response_is_let_go() -> None:
    """Nothing more can be taken out: its lease is left to run out (the delivery is then tried
    again), and everything else is still recorded."""
    store = PostgresLikeStore([make_job(i) for i in range(6)], refuse_ids=[4])
    relay = Relay(store=store, transport=ScriptedTransport({}), config=CONFIG)
    stop = asyncio.Event()
    await run_until(relay, stop, lambda: len(store.completed) == 5)
    assert sorted(c.job.delivery_id for c in store.completed) == [0, 1, 2, 3, 5]
    assert store.released == []  # no longer held: neither renewed nor handed back


async def test_a_hostile_retry_after_costs_the_hint_not_the_worker() -> None:
    """parse_retry_after raises on these; the worker must survive and the outcome be written."""
    store = FakeStore([make_job(i) for i in range(3)])
    results = {
        i: AttemptResult(
            started_at=datetime.now(UTC), duration=0.001, status=503, retry_after=value
        )
        for i, value in enumerate(["9" * 5000, "9" * 400, "\u00b2"])
    }
    relay = Relay(store=store, transport=ScriptedTransport(results), config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 3)
    assert [c.outcome for c in store.completed] == [Retry(60.0)] * 3


class RefusingStore(PostgresLikeStore):
    """Refuses every write for its content."""

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.writing.set()
        self.refused += 1
        raise InvalidInput(NUL_REFUSED)


class UnavailableStore(PostgresLikeStore):
    """The database is gone for every write."""

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.writing.set()
        raise DatabaseUnavailable("connection refused")


class HangingStore(PostgresLikeStore):
    """A write that never returns."""

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self.writing.set()
        await asyncio.sleep(3600)


@pytest.mark.parametrize("store_class", [RefusingStore, UnavailableStore, HangingStore])
async def test_stop_keeps_its_deadline_whatever_the_completer_is_doing(
    store_class: type[PostgresLikeStore],
) -> None:
    config = dataclasses.replace(CONFIG, shutdown_timeout=0.5)
    bound = config.shutdown_timeout + 2 * Relay.SHUTDOWN_GRACE
    store = store_class([make_job(i) for i in range(5)])
    relay = Relay(store=store, transport=ScriptedTransport({}), config=config)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(store.writing.wait(), 5)
    stop.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(task, bound + 1)
    assert loop.time() - started < bound
    assert store.completed == []
    assert not store.registered  # deregistered
    # Outcomes not written: their leases are handed back for another try, except the ones the
    # database refused outright, which were let go (their leases run out).
    expected = [] if store_class is RefusingStore else list(range(5))
    assert sorted(store.released) == expected


# -- a database fault never ends the relay (issue 10 item 4) -----------------------------------


class RawFaultStore(FakeStore):
    """Every call raises what the driver raises after a server restart, untranslated, until
    ``heal()``: the relay must ride it out whatever the exception's type."""

    def __init__(self, jobs: Sequence[Job], fault: Exception) -> None:
        super().__init__(jobs)
        self.fault: Exception | None = fault
        self.faults: dict[str, int] = {}

    def heal(self) -> None:
        self.fault = None

    def _maybe_fail(self, what: str) -> None:
        if self.fault is not None:
            self.faults[what] = self.faults.get(what, 0) + 1
            raise self.fault

    async def claim(self, relay_id: uuid.UUID, limit: int, lease: float) -> list[Job]:
        # The first claim succeeds, so that deliveries are in flight when the fault starts.
        if self.faults.get("claim_ok"):
            self._maybe_fail("claim")
        self.faults["claim_ok"] = 1
        return await super().claim(relay_id, limit, lease)

    async def complete(self, relay_id: uuid.UUID, batch: Sequence[Completion]) -> None:
        self._maybe_fail("complete")
        await super().complete(relay_id, batch)

    async def renew(self, relay_id: uuid.UUID, ids: Sequence[int], lease: float) -> set[int]:
        self._maybe_fail("renew")
        return await super().renew(relay_id, ids, lease)

    async def heartbeat(self, relay_id: uuid.UUID) -> bool:
        self._maybe_fail("heartbeat")
        return await super().heartbeat(relay_id)

    async def go_idle(self, relay_id: uuid.UUID, limit: int, lease: float) -> IdleTurn:
        self._maybe_fail("go_idle")
        return await super().go_idle(relay_id, limit, lease)

    async def next_due(self) -> datetime | None:
        self._maybe_fail("next_due")
        return await super().next_due()


@pytest.mark.parametrize(
    "fault",
    [
        asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"),
        RuntimeError("a bug in the store"),
    ],
    ids=["driver-internal", "bug"],
)
async def test_no_exception_from_the_store_ends_the_relay(fault: Exception) -> None:
    store = RawFaultStore([make_job(i) for i in range(8)], fault)
    transport = FakeTransport(delay=0.05)
    # A short lease: the lease keeper renews (and fails) several times during the fault.
    config = dataclasses.replace(CONFIG, lease=0.15)
    relay = Relay(store=store, transport=transport, config=config)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        async with asyncio.timeout(5):
            while not all(store.faults.get(k) for k in ("claim", "complete", "renew")):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # failing all along
        assert not task.done(), "a database fault ended the relay"
        store.heal()
        store.queue.extend(make_job(i) for i in range(8, 12))
        async with asyncio.timeout(5):
            while len(store.completed) < 12:
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(12))
    # Visible, and in a way that tells the unexpected from an outage: an error with the
    # exception's type and its traceback.
    errors = [e for e in logs if e["log_level"] == "error" and "traceback" in e]
    assert errors
    assert all(e["error"].startswith(type(fault).__name__) for e in errors)


async def test_cancelling_the_relay_still_cancels_it_during_a_fault() -> None:
    store = RawFaultStore([make_job(i) for i in range(4)], RuntimeError("down"))
    relay = Relay(store=store, transport=FakeTransport(delay=0.05), config=CONFIG)
    task = asyncio.create_task(relay.run(asyncio.Event()))
    async with asyncio.timeout(5):
        while not store.faults.get("claim"):
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


class CrashRestartedStore(FakeStore):
    """The UNLOGGED courier.relays was emptied (a crash restart): the next heartbeat finds no row
    and the relay registers again, busy."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_lost = False

    async def heartbeat(self, relay_id: uuid.UUID) -> bool:
        return not self.rows_lost

    async def register(self, relay_id: uuid.UUID) -> None:
        await super().register(relay_id)
        self.rows_lost = False


async def test_a_relay_registered_again_marks_itself_idle_again_at_once() -> None:
    # Registering again writes the row busy, so producers stop notifying: the relay must go
    # through its claim loop and mark itself idle again now, not at the next poll.
    store = CrashRestartedStore()
    config = dataclasses.replace(CONFIG, poll_interval=60.0, lease=0.3)
    relay = Relay(store=store, transport=FakeTransport(), config=config)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(5):
            while store.idle_calls != [True]:
                await asyncio.sleep(0.01)
        store.rows_lost = True
        async with asyncio.timeout(2):  # a few heartbeats (every 0.1 s), far below the poll
            while store.idle_calls != [True, True]:
                await asyncio.sleep(0.01)
        assert relay.wakeups.get("reregistered") == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_bug_after_an_attempt_costs_that_attempt_not_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeStore([make_job(i) for i in range(5)])
    # One worker: were it to die, nothing after the first job would ever be sent.
    config = dataclasses.replace(CONFIG, max_in_flight=1)
    relay = Relay(store=store, transport=FakeTransport(), config=config)
    decide = relay._decide

    def buggy(job: Job, result: AttemptResult) -> Delivered | Retry:
        if job.delivery_id == 0:
            raise KeyError("a bug deciding")
        outcome = decide(job, result)
        assert isinstance(outcome, Delivered | Retry)
        return outcome

    monkeypatch.setattr(relay, "_decide", buggy)
    with structlog.testing.capture_logs() as logs:
        await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 4)
    assert sorted(c.job.delivery_id for c in store.completed) == [1, 2, 3, 4]
    # Its lease is no longer renewed nor handed back as if in flight: it runs out, and the
    # delivery is sent again.
    assert 0 not in store.released
    [error] = [e for e in logs if e["event"].startswith("delivery failed")]
    assert error["delivery_id"] == 0
    assert error["error"].startswith("KeyError")


class FanOutOutlastsTheWorkStore(FakeStore):
    """Its fan-out returns only once every attempt in hand has finished and been recorded: the
    room they free arrives while the relay waits on the fan-out."""

    def __init__(self, jobs: Sequence[Job], transport: FakeTransport) -> None:
        super().__init__(jobs)
        self.transport = transport

    async def fan_out(self, limit: int) -> int:
        while self.transport.in_flight:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the completion writer's flush
        return 0


async def test_room_freed_during_a_fan_out_wakes_the_claim_loop() -> None:
    # A relay with no room asks for a fan-out of any backlog before waiting for room. Room
    # freed during that call used to be forgotten (the flag was cleared after it): the relay
    # then waited, with nothing in flight, until it was stopped.
    transport = FakeTransport(delay=0.01)
    store = FanOutOutlastsTheWorkStore([make_job(i) for i in range(40)], transport)
    relay = Relay(store=store, transport=transport, config=CONFIG)
    await run_until(relay, asyncio.Event(), lambda: len(store.completed) == 40)
    assert sorted(c.job.delivery_id for c in store.completed) == list(range(40))
