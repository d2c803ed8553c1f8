"""Retry schedule, jitter and outcome classification: pure functions, no I/O.

The relay asks :func:`decide` what to do after each HTTP attempt and gets back a value:
:class:`Delivered`, :class:`Retry` (with the delay) or :class:`Dead` (with the reason).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

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
    """Try again after ``after`` seconds."""

    after: float


@dataclass(frozen=True, slots=True)
class Dead:
    """Stop trying; the delivery goes to the dead letters."""

    reason: str


Outcome = Delivered | Retry | Dead


def is_success(status: int | None) -> bool:
    """2xx is success. Redirects are failures: webhooks are never followed elsewhere."""
    return status is not None and 200 <= status < 300


def decide(
    *,
    status: int | None,
    error: str | None,
    attempts_in_schedule: int,
    schedule: Sequence[float],
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> Outcome:
    """What to do after an attempt.

    ``attempts_in_schedule`` counts the attempts made since the delivery was created or last
    replayed, including the one just made. ``schedule[i]`` is the wait before attempt ``i + 2``.
    Timeouts and connection errors (``status`` None, ``error`` set) and non-2xx responses are all
    failures.
    """
    if error is None and is_success(status):
        return Delivered()
    retries_used = attempts_in_schedule - 1
    if retries_used < len(schedule):
        return Retry(after=jittered(schedule[retries_used], jitter, rng or random.Random()))
    what = f"HTTP {status}" if status is not None else (error or "no response")
    return Dead(reason=f"gave up after {attempts_in_schedule} attempts; last: {what}")
