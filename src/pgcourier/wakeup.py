"""What wakes an idle relay: a NOTIFY, the retry timer, a completion, or the poll interval.

The relay's claim loop sleeps here between claims. Wake-ups are level-triggered (an
:class:`asyncio.Event`): one that lands while the loop is busy claiming is not lost, the next
sleep returns at once. The loop clears it just before each claim (see Relay._claim_loop).
"""

from __future__ import annotations

import asyncio

import structlog

from pgcourier.metrics import Metrics

log = structlog.get_logger("pgcourier.relay")


class Alarm:
    """One relay's wake-up: the event, the earliest pending timer, and counts by source."""

    def __init__(self, *, poll_interval: float, metrics: Metrics | None = None) -> None:
        self._poll_interval = poll_interval
        self._metrics = metrics
        self._event = asyncio.Event()
        self._source = "poll"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.counts: dict[str, int] = {"notify": 0, "poll": 0, "retry_timer": 0}

    def ring(self, source: str) -> None:
        """Wake the sleeper now (or make its next sleep return at once)."""
        self._source = source
        self._event.set()

    def clear(self) -> None:
        """Forget wake-ups so far: called just before a claim, which will see their work."""
        self._event.clear()

    def arm(self, delay: float) -> None:
        """Ring at the latest ``delay`` seconds from now (keeps only the earliest timer)."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(delay, 0.0)
        if at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self.ring("retry_timer")

    def cancel(self) -> None:
        """Drop the pending timer (the relay is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")

    async def sleep(self, stop: asyncio.Event) -> None:
        """Block until rung, the poll interval passes, or ``stop``."""
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._event.wait())
        try:
            done, _ = await asyncio.wait(
                {stopper, waker},
                timeout=self._poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopper.cancel()
            waker.cancel()
        source = self._source if waker in done else "poll"
        self.counts[source] = self.counts.get(source, 0) + 1
        if self._metrics:
            self._metrics.wakeups.labels(source).inc()
        log.debug("woke", source=source)
