"""Values passed between the store, the relay and the transports."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from pgcourier.policy import Outcome

#: The longest error text kept for an attempt. Errors can quote what a receiver sent (aiohttp
#: shows the start of a bad status line or header), and an error is read as one log line.
ERROR_LIMIT = 1024

# What a Postgres ``text`` value cannot hold (NUL), and what asyncpg cannot encode to UTF-8 (lone
# surrogates: aiohttp decodes header bytes that are not UTF-8 with "surrogateescape").
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str | bytes, limit: int, *, one_line: bool = False) -> str:
    """Receiver-controlled text made fit for the database and the log, whatever bytes it holds.

    Bytes are decoded as UTF-8; invalid sequences, NUL and lone surrogates become U+FFFD (visible,
    unlike a silent deletion). ``one_line`` folds every run of whitespace, line breaks included,
    into one space. At most ``limit`` characters are kept; text cut short ends with "...".
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = _UNSTORABLE.sub("\ufffd", text)
    if one_line:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..." if limit > 3 else text[:limit]
    return text


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed delivery: an event on its way to one endpoint."""

    delivery_id: int
    event_id: UUID
    endpoint_id: UUID
    attempts: int
    schedule_base: int
    event_type: str
    payload: str  # the event's JSON object as Postgres rendered it; never re-serialised
    created_at: datetime
    url: str
    # The current secret first; the previous one during a rotation. Kept out of repr (as are the
    # headers, where receivers' credentials go): a traceback or a debug line must not show them.
    secrets: tuple[str, ...] = field(repr=False)
    timeout: float | None = None  # the endpoint's own request timeout, if it set one
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # custom headers
    signature_scheme: str = "standard"
    permanent_statuses: frozenset[int] = frozenset()
    ordering_key: str | None = None
    # The endpoint was not healthy when claimed (failures counted, circuit not closed): its
    # outcomes must be reported to the endpoint even if they are all successes.
    troubled: bool = False
    kind: str = "webhook"  # or "slack": chat.postMessage to slack_channel
    slack_channel: str | None = None
    slack_token: str | None = field(default=None, repr=False)  # None: the relay's bot token
    template: str | None = None

    @property
    def attempt(self) -> int:
        """The number of the attempt about to be made (1 for the first)."""
        return self.attempts + 1

    def body(self) -> bytes:
        """The webhook body, built once from the stored JSON text without parsing it.

        ``{"id": ..., "type": ..., "timestamp": ..., "data": <payload>}``: the same bytes on every
        attempt and replay.
        """
        timestamp = self.created_at.astimezone(UTC).isoformat(timespec="microseconds")
        return (
            f'{{"id":"{self.event_id}","type":{json.dumps(self.event_type)},'
            f'"timestamp":"{timestamp.replace("+00:00", "Z")}","data":{self.payload}}}'
        ).encode()


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What happened on the wire. ``status`` is None when no response came back."""

    started_at: datetime
    duration: float
    status: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: str | None = None  # the response's Retry-After header, as sent
    # Set when retrying cannot help (e.g. Slack's invalid_auth): dead at once, and this is why
    # the endpoint is disabled.
    permanent: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """An attempt and the decision taken on it, waiting to be written."""

    job: Job
    result: AttemptResult
    outcome: Outcome
