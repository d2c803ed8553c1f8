"""Retry schedule, jitter and outcome decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcourier.policy import (
    DEFAULT_RETRY_SCHEDULE,
    Dead,
    Delivered,
    EndpointReport,
    Retry,
    decide,
    endpoint_reports,
    jittered,
    parse_duration,
    parse_retry_after,
    parse_schedule,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1.5", 1.5),
        (" 10s ", 10),
        (3, 3.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "s", "1 s s", "five"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_default_schedule() -> None:
    assert parse_schedule(DEFAULT_RETRY_SCHEDULE) == (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    )


def test_schedule_base_2_gives_five_attempts() -> None:
    schedule = parse_schedule("2s,4s,8s,16s")
    outcomes = [
        decide(status=500, error=None, attempts_in_schedule=n, schedule=schedule, jitter=0)
        for n in range(1, 6)
    ]
    assert outcomes[:4] == [Retry(2), Retry(4), Retry(8), Retry(16)]
    assert isinstance(outcomes[4], Dead)
    assert "5 attempts" in outcomes[4].reason
    assert "HTTP 500" in outcomes[4].reason


def test_schedule_rejects_zero_and_accepts_empty() -> None:
    assert parse_schedule("") == ()
    with pytest.raises(ValueError, match="greater than zero"):
        parse_schedule("1s,0s")


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert decide(status=status, error=None, attempts_in_schedule=1, schedule=()) == Delivered()


@pytest.mark.parametrize("status", [199, 301, 302, 400, 404, 429, 500, 503])
def test_everything_else_is_a_failure(status: int) -> None:
    assert decide(
        status=status, error=None, attempts_in_schedule=1, schedule=(1.0,), jitter=0
    ) == Retry(1.0)


def test_errors_are_failures_and_named_when_dead() -> None:
    out = decide(status=None, error="timeout after 10s", attempts_in_schedule=1, schedule=())
    assert out == Dead(reason="gave up after 1 attempts; last: timeout after 10s")


@given(
    delay=st.floats(min_value=0.001, max_value=1e6),
    jitter=st.floats(min_value=0, max_value=0.99),
    seed=st.integers(),
)
def test_jitter_stays_within_bounds(delay: float, jitter: float, seed: int) -> None:
    value = jittered(delay, jitter, random.Random(seed))
    assert delay * (1 - jitter) - 1e-9 <= value <= delay * (1 + jitter) + 1e-9


def test_jitter_actually_spreads() -> None:
    rng = random.Random(1)
    values = {round(jittered(100.0, 0.2, rng), 6) for _ in range(100)}
    assert len(values) > 90
    assert min(values) < 90
    assert max(values) > 110


# -- response classification ---------------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def test_410_is_dead_at_once_and_disables_the_endpoint() -> None:
    outcome = decide(status=410, error=None, attempts_in_schedule=1, schedule=(1.0, 2.0))
    assert isinstance(outcome, Dead)
    assert outcome.disable == "the receiver answered 410 Gone"


def test_permanent_statuses_are_dead_at_once() -> None:
    outcome = decide(
        status=404, error=None, attempts_in_schedule=1, schedule=(1.0,), permanent_statuses={404}
    )
    assert isinstance(outcome, Dead)
    assert outcome.disable is None
    assert "permanent" in outcome.reason
    # Not listed: the schedule applies.
    assert decide(
        status=400,
        error=None,
        attempts_in_schedule=1,
        schedule=(1.0,),
        jitter=0,
        permanent_statuses={404},
    ) == Retry(1.0)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_waits_at_least_that_long_and_pauses_the_endpoint(status: int) -> None:
    outcome = decide(
        status=status,
        error=None,
        attempts_in_schedule=1,
        schedule=(5.0,),
        jitter=0,
        retry_after=120.0,
    )
    assert outcome == Retry(after=120.0, pause=120.0)
    # A shorter Retry-After than the schedule: the schedule's wait, and the endpoint pause.
    outcome = decide(
        status=status,
        error=None,
        attempts_in_schedule=1,
        schedule=(300.0,),
        jitter=0,
        retry_after=2.0,
    )
    assert outcome == Retry(after=300.0, pause=2.0)


def test_retry_after_is_capped_and_ignored_on_other_statuses() -> None:
    outcome = decide(
        status=429,
        error=None,
        attempts_in_schedule=1,
        schedule=(5.0,),
        jitter=0,
        retry_after=10 * 86400.0,
        retry_after_cap=3600.0,
    )
    assert outcome == Retry(after=3600.0, pause=3600.0)
    outcome = decide(
        status=500,
        error=None,
        attempts_in_schedule=1,
        schedule=(5.0,),
        jitter=0,
        retry_after=120.0,
    )
    assert outcome == Retry(after=5.0, pause=None)


def test_retry_after_when_the_schedule_is_used_up_still_pauses() -> None:
    outcome = decide(
        status=429, error=None, attempts_in_schedule=2, schedule=(5.0,), retry_after=30.0
    )
    assert isinstance(outcome, Dead)
    assert outcome.pause == 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 25 Nov 2026 12:01:30 GMT", 90.0),
        ("Wed, 25 Nov 2026 11:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        (None, None),
        # A receiver's header must never raise: digits int() refuses, past its 4,300-digit
        # limit, too large for a float, and non-ASCII digits HTTP does not allow.
        ("\u00b2", None),
        ("1" * 5000, None),
        ("9" * 400, None),
        ("\u0663", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_endpoint_reports_summarise_a_batch_in_order() -> None:
    fail, ok = Retry(1.0), Delivered()
    reports = endpoint_reports(
        [
            ("a", fail, False),
            ("a", ok, False),
            ("a", fail, False),  # a: one failure after its last success
            ("b", ok, False),  # b: healthy and all good: nothing to write
            ("c", ok, True),  # c: all good but troubled when claimed: report the recovery
            ("d", Retry(1.0, pause=30.0), False),
            ("d", Retry(1.0, pause=10.0), False),
            ("e", Dead("gone", disable="410"), False),
        ]
    )
    assert reports == {
        "a": EndpointReport(ok=True, trailing=1, pause=None, gone=None),
        "c": EndpointReport(ok=True, trailing=0, pause=None, gone=None),
        "d": EndpointReport(ok=False, trailing=2, pause=30.0, gone=None),
        "e": EndpointReport(ok=False, trailing=1, pause=None, gone="410"),
    }
