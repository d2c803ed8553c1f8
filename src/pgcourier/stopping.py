"""How a relay stops, within a bound whatever the database and the receivers do.

:meth:`pgcourier.relay.Relay.run` calls :func:`drain` once the claim loop has ended, then
:func:`hand_back`. Draining lets deliveries in flight finish and writes their outcomes, within
``shutdown_timeout`` plus one ``grace`` for the last write; handing back releases the leases of
whatever is left and deregisters, within one more ``grace``. Anything a stop cannot finish in time
comes back on its own: leases run out, and a dead relay's row is reaped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

import structlog

from pgcourier.completer import Completer
from pgcourier.leases import Leases
from pgcourier.store import RelayStore
from pgcourier.tasks import first, log_failure
from pgcourier.workers import DeliveryWorkers

log = structlog.get_logger("pgcourier.relay")


async def drain(
    *,
    workers: DeliveryWorkers,
    completer: Completer,
    background: Sequence[asyncio.Task[None]],
    store: RelayStore,
    shutdown_timeout: float,
    grace: float,
) -> None:
    """Stop: let in-flight deliveries finish and write their outcomes, within the shutdown
    timeout (plus a grace for the last write) whatever the database or receivers do.

    ``background`` are the completer's and the lease keeper's tasks: both end once the completer
    is closing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + shutdown_timeout
    completer.deadline = deadline
    await workers.drain(shutdown_timeout)
    # The completer writes what is pending and returns; it stops retrying at the deadline.
    # A write still running after the grace is abandoned: it is one transaction, so it is
    # recorded whole or not at all, and handing back leases afterwards only touches those
    # still ours.
    completer.closing.set()
    left = deadline - loop.time() + grace
    _, late = await asyncio.wait(background, timeout=max(left, 0.0))
    for task in late:
        log.error("abandoning a task at shutdown", task=task.get_name())
        task.cancel()
    if late:
        # They wait on a database that stopped answering, and a cancelled query still waits
        # for its connection's release: without this the stop would take command_timeout.
        store.abandon()
    if completer.pending:
        log.error(
            "giving up on completions at shutdown; these deliveries will be sent again",
            n=len(completer.pending),
        )
        completer.pending.clear()


async def hand_back(
    *, leases: Leases, store: RelayStore, relay_id: uuid.UUID, grace: float
) -> None:
    """Release the leases of deliveries left without an outcome, and deregister."""
    # Best effort, bounded: leases left behind expire, and a dead relay's row is reaped.
    try:
        async with asyncio.timeout(grace):
            await leases.release_leftover()
            await store.deregister(relay_id)
    except TimeoutError:
        log.warning("could not deregister in time; the row will be reaped")
    except Exception as exc:
        log_failure("could not deregister; the row will be reaped", exc)


async def retrying(
    what: str, call: Callable[[], Awaitable[None]], stop: asyncio.Event, interval: float
) -> None:
    """Run ``call()`` until it succeeds, ``interval`` seconds apart, or until ``stop`` is set."""
    while not stop.is_set():
        try:
            await call()
            return
        except Exception as exc:
            log_failure(f"{what} failed; retrying", exc)
            await first(stop.wait(), asyncio.sleep(interval))
