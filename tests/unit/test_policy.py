"""Retry schedule, jitter and outcome decisions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcourier.policy import (
    DEFAULT_RETRY_SCHEDULE,
    Dead,
    Delivered,
    Retry,
    decide,
    jittered,
    parse_duration,
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
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "s", "1 s s", "five"])
def test_parse_duration_rejects_garbage(text) -> None:
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
def test_2xx_is_delivered(status) -> None:
    assert decide(status=status, error=None, attempts_in_schedule=1, schedule=()) == Delivered()


@pytest.mark.parametrize("status", [199, 301, 302, 400, 404, 410, 429, 500, 503])
def test_everything_else_is_a_failure(status) -> None:
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
