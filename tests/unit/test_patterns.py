"""Event types and endpoint patterns (the database twin is checked in integration tests)."""

from __future__ import annotations

import pytest

from pgcourier.patterns import is_valid_event_type, matches, validate_patterns


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["order.*"], "order.paid", True),
        (["order.*"], "order.item.added", True),
        (["order.*"], "order", False),
        (["order.*"], "orders.paid", False),
        (["*"], "anything.at.all", True),
        (["*.failed"], "payment.failed", True),
        (["*.failed"], "payment.failed.v2", False),
        (["request_submitted"], "request_submitted", True),
        (["request_submitted"], "requestXsubmitted", False),
        (["order.*", "request_submitted"], "request_submitted", True),
        (["a.*.c"], "a.b.c", True),
        (["a.*.c"], "a.c", False),
    ],
)
def test_matches(patterns, event_type, expected) -> None:
    assert matches(patterns, event_type) is expected


@pytest.mark.parametrize("event_type", ["order.paid", "request_submitted", "a", "A:b-c_d.9"])
def test_valid_event_types(event_type) -> None:
    assert is_valid_event_type(event_type)


@pytest.mark.parametrize("event_type", ["", " a", "a b", ".a", "a*", "a%", "x" * 201, "é"])
def test_invalid_event_types(event_type) -> None:
    assert not is_valid_event_type(event_type)


def test_validate_patterns_names_each_problem() -> None:
    assert validate_patterns(["order.*", "*"]) == []
    assert validate_patterns([]) == ["at least one event type pattern is needed"]
    problems = validate_patterns(["ok", "bad pattern", "50%"])
    assert len(problems) == 2
    assert "'bad pattern'" in problems[0]
    assert "'50%'" in problems[1]
