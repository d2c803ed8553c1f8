"""Endpoints whose stored secrets this relay's keys do not open: handed back, not failed.

A relay meets one when a writer with another key set stored the secret after the relay started
(a rolling deploy that puts a new first key in front, before every relay has it). Failing the
deliveries would be wrong: the relay, not the endpoint, is at fault, and a relay that has the
key can send them. So the store hands their leases back (the claim is given back too, as at
shutdown: the poison count does not grow), due again after ``hold`` seconds so that no relay
spins on them, logs one error per endpoint while the condition lasts, and the relay reports not
ready (``/ready``) until no such secret has been met for ``2 * hold`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

#: Seconds a delivery handed back waits before any relay claims it again. Long enough that a
#: relay without the key spends one claim per endpoint every so often; short enough that a
#: relay with the key sends it soon.
HOLD = 30.0


class UnopenedSecrets:
    """The endpoints whose secrets this relay could not open lately (shared with ``/ready``)."""

    def __init__(self, *, hold: float = HOLD, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self._clock = clock
        # Endpoint id -> when a delivery for it was last handed back.
        self._seen: dict[UUID, float] = {}
        #: Deliveries handed back so far (for tests and operators' curiosity).
        self.handed_back = 0

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, endpoint_id: UUID, deliveries: int) -> bool:
        """Deliveries of ``endpoint_id`` were handed back; True when that is news (log it)."""
        self._expire()
        self.handed_back += deliveries
        new = endpoint_id not in self._seen
        self._seen[endpoint_id] = self._clock()
        return new

    def opened(self, endpoint_id: UUID) -> None:
        """A secret of ``endpoint_id`` opened after all (e.g. rotated by a writer with our key)."""
        self._seen.pop(endpoint_id, None)

    @property
    def endpoints(self) -> list[UUID]:
        """The endpoints met lately: while there are any, the relay is not ready."""
        self._expire()
        return sorted(self._seen)

    def _expire(self) -> None:
        # Handed back deliveries come again every `hold` seconds while they are there; two
        # holds without one means another relay sent them (or they went away).
        cutoff = self._clock() - 2 * self.hold
        for endpoint_id in [e for e, at in self._seen.items() if at < cutoff]:
            del self._seen[endpoint_id]
