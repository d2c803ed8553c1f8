"""Going idle: what the relay's one round trip to mark itself idle did, and how long it waits.

A relay with nothing to claim flags itself idle in ``courier.relays`` so that producers notify
it, waits (bounded) for the commits of producers that may have read the flag busy, claims once
more for their events, and reads the next due time for its timer: one statement,
``courier.claim_going_idle`` (sql/migrations/0018, 0019, 0020).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog

from pgcourier.model import Job

log = structlog.get_logger("pgcourier.store")

# PGCOURIER_IDLE_SETTLE_TIMEOUT's default: seconds a relay marking itself idle waits for the
# commits of producers that may have seen it busy (sql/migrations/0018).
DEFAULT_IDLE_SETTLE = 0.05
# After that wait gave up (a transaction holds the producers' lock for long), seconds the relay
# marks itself idle without waiting: each wait would hold its claim loop for the whole timeout.
IDLE_SETTLE_PAUSE = 10.0
# Seconds going idle waits for its own row in courier.relays before it looks at who holds it: a
# producer flipping the flag holds it to its commit, which SET CONSTRAINTS ... IMMEDIATE makes
# as long as that producer's transaction (sql/migrations/0019). Any holder still there after
# this is either such a producer or is waited for as before.
ROW_WAIT = 0.01


@dataclass(frozen=True, slots=True)
class IdleTurn:
    """What going idle did (``RelayStore.go_idle``): one round trip that marks the relay idle,
    claims, and reads the next due time when the claim took nothing (0020)."""

    #: False when another transaction holds the relay's row flagged busy: nothing was written
    #: and nothing claimed (0019); going idle is tried again shortly.
    written: bool
    #: Whether the claim was made in the same round trip; if not (the producers' commits were
    #: not waited for), the relay claims in a call of its own.
    claimed: bool = False
    jobs: list[Job] = field(default_factory=list)
    #: The next due time, read when the claim took nothing (None: nothing is due, or not read).
    next_due: datetime | None = None
    #: Rows the claim returned: more than ``jobs`` when some were buried as poison or handed
    #: back (secrets our keys do not open). Then the next due time was not read: claim again.
    rows: int = 0


class SettleWait:
    """How long going idle waits for producers' commits, and what its answer means."""

    def __init__(self, timeout: float = DEFAULT_IDLE_SETTLE) -> None:
        self.timeout = timeout
        self._again_at = 0.0  # time.monotonic() from which going idle waits again

    def seconds(self, now: float) -> float:
        """The wait to ask for: the timeout, or 0 for a while after a wait gave up."""
        return self.timeout if now >= self._again_at else 0.0

    def written(self, outcome: str, now: float) -> bool:
        """Read courier.relay_idle's answer: False when nothing was written ('busy')."""
        if outcome == "busy":
            return False
        if outcome == "held":
            # Another transaction holds our row with the flag already as wanted (0019): a
            # producer flipping it notifies when it commits, producers notify meanwhile.
            log.debug("relay row held by another transaction; its flag already as wanted")
        elif outcome != "settled":
            self._again_at = now + IDLE_SETTLE_PAUSE
            log.warning(
                "going idle, waited past IDLE_SETTLE_TIMEOUT for producers' commits (a "
                "transaction may hold their wake-up lock: a prepared one, or one that set the "
                "outbox's triggers IMMEDIATE); not waiting for a while, so an event committed "
                "as the relay goes idle may wait for the poll",
                idle_settle_timeout=self.timeout,
                pause_seconds=IDLE_SETTLE_PAUSE,
            )
        return True
