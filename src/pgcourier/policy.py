"""Retry schedule, jitter and outcome classification: pure functions, no I/O.

The relay asks :func:`decide` what to do after each HTTP attempt and gets back a value:
:class:`Delivered`, :class:`Retry` (with the delay) or :class:`Dead` (with the reason).
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
DEFAULT_JITTER = 0.2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"250ms"``, ``"5s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a bare number of seconds.

    Raises :class:`ValueError` with a readable message for anything else.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 500ms, 5s, 5m, 2h or 1d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 5s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_schedule(text: str) -> tuple[float, ...]:
    """Delays between attempts, from a comma-separated list of durations.

    ``"2s,4s,8s,16s"`` means: first attempt, then retries 2, 4, 8 and 16 seconds after each failure
    (five attempts in all); after the last the delivery is dead-lettered. An empty string means
    "never retry".
    """
    if not text.strip():
        return ()
    delays = tuple(parse_duration(part) for part in text.split(","))
    if any(d <= 0 for d in delays):
        raise ValueError("every retry delay must be greater than zero")
    return delays


def jittered(delay: float, jitter: float, rng: random.Random) -> float:
    """``delay`` spread uniformly over ``[delay * (1 - jitter), delay * (1 + jitter)]``.

    Jitter keeps a receiver that recovers from an outage from being hit by every retry at once.
    """
    if jitter <= 0:
        return delay
    return delay * (1.0 + rng.uniform(-jitter, jitter))


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver accepted the message."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``after`` seconds. ``pause``: the receiver asked (Retry-After) for the
    whole endpoint to be left alone that many seconds."""

    after: float
    pause: float | None = None


@dataclass(frozen=True, slots=True)
class Dead:
    """Stop trying; the delivery goes to the dead letters. ``disable``: a reason to disable the
    endpoint too (410 Gone); ``pause`` as for :class:`Retry`."""

    reason: str
    disable: str | None = None
    pause: float | None = None


Outcome = Delivered | Retry | Dead


def is_success(status: int | None) -> bool:
    """2xx is success. Redirects are failures: webhooks are never followed elsewhere."""
    return status is not None and 200 <= status < 300


DEFAULT_RETRY_AFTER_CAP = 3600.0


_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP date (RFC 9110).
    None when absent or unreadable; a date in the past is 0."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit() also accepts "\u00b2" and other digits int() refuses, and a
    # receiver's header must never raise. Past int()'s 4,300-digit limit, or too large for a
    # float, the number is as unreadable as a word.
    if _DELTA_SECONDS.fullmatch(text):
        try:
            return float(int(text))
        except (ValueError, OverflowError):
            return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def decide(
    *,
    status: int | None,
    error: str | None,
    attempts_in_schedule: int,
    schedule: Sequence[float],
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
    permanent_statuses: Collection[int] = (),
    retry_after: float | None = None,
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
    permanent: str | None = None,
) -> Outcome:
    """What to do after an attempt.

    ``attempts_in_schedule`` counts the attempts made since the delivery was created or last
    replayed, including the one just made. ``schedule[i]`` is the wait before attempt ``i + 2``.

    * 2xx: delivered. Everything else is a failure: 3xx (redirects are never followed),
      timeouts and connection errors (``status`` None, ``error`` set) included.
    * ``permanent`` (a transport's verdict, e.g. Slack's ``invalid_auth``): dead at once, and
      the endpoint is to be disabled with that reason.
    * 410 Gone: dead at once, and the endpoint is to be disabled.
    * A status in ``permanent_statuses``: dead at once.
    * 429 or 503 with ``retry_after`` seconds: the next attempt waits at least that long (capped
      at ``retry_after_cap``), and so does the whole endpoint.
    * Otherwise the retry schedule; dead when it is used up.
    """
    if permanent is not None:
        return Dead(reason=f"{error or permanent}: retrying cannot help", disable=permanent)
    if error is None and is_success(status):
        return Delivered()
    what = f"HTTP {status}" if status is not None else (error or "no response")
    if status == 410:
        return Dead(
            reason="HTTP 410 Gone: the receiver says this endpoint no longer exists",
            disable="the receiver answered 410 Gone",
        )
    if status is not None and status in permanent_statuses:
        return Dead(reason=f"{what} is a permanent failure for this endpoint")
    pause = None
    if status in (429, 503) and retry_after is not None:
        pause = min(retry_after, retry_after_cap)
    retries_used = attempts_in_schedule - 1
    if retries_used < len(schedule):
        after = jittered(schedule[retries_used], jitter, rng or random.Random())
        return Retry(after=max(after, pause or 0.0), pause=pause)
    return Dead(reason=f"gave up after {attempts_in_schedule} attempts; last: {what}", pause=pause)


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """What one batch of attempts says about one endpoint (see :func:`endpoint_reports`)."""

    ok: bool  # a success in the batch
    trailing: int  # failures after its last success
    pause: float | None  # Retry-After seconds, the longest asked for
    gone: str | None  # a reason to disable it now


def endpoint_reports(
    outcomes: Sequence[tuple[str, Outcome, bool]],
) -> dict[str, EndpointReport]:
    """Summarise a batch, in attempt order, per endpoint: ``(endpoint_id, outcome, troubled)``.

    Endpoints whose news is all good and who were healthy when claimed are left out: nothing
    about them needs writing, which keeps the happy path from touching endpoint rows.
    """
    reports: dict[str, EndpointReport] = {}
    troubled: set[str] = set()
    for endpoint_id, outcome, was_troubled in outcomes:
        if was_troubled:
            troubled.add(endpoint_id)
        r = reports.get(endpoint_id, EndpointReport(False, 0, None, None))
        if isinstance(outcome, Delivered):
            r = EndpointReport(True, 0, r.pause, r.gone)
        else:
            pause = outcome.pause
            if r.pause is not None and (pause is None or r.pause > pause):
                pause = r.pause
            gone = r.gone or (outcome.disable if isinstance(outcome, Dead) else None)
            r = EndpointReport(r.ok, r.trailing + 1, pause, gone)
        reports[endpoint_id] = r
    return {
        eid: r
        for eid, r in reports.items()
        if eid in troubled or r.trailing or r.pause is not None or r.gone is not None
    }
