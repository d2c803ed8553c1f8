"""Settings come from PGCOURIER_* variables and fail with one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgcourier.errors import ConfigurationError
from pgcourier.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PGCOURIER_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url is None
    assert s.data_dir == Path(".pgcourier")
    assert s.poll_interval == 1.0
    assert s.delivery_timeout == 10.0
    assert s.retry_delays == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert s.max_payload_bytes == 262144


def test_environment_is_read_with_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_POLL_INTERVAL", "250ms")
    monkeypatch.setenv("PGCOURIER_RETRY_SCHEDULE", "2s,4s,8s,16s")
    monkeypatch.setenv("PGCOURIER_DELIVERY_TIMEOUT", "3")
    monkeypatch.setenv("PGCOURIER_LOG_LEVEL", "DEBUG")
    s = load_settings()
    assert s.poll_interval == 0.25
    assert s.retry_delays == (2, 4, 8, 16)
    assert s.delivery_timeout == 3
    assert s.log_level == "debug"


def test_each_problem_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_POLL_INTERVAL", "soon")
    monkeypatch.setenv("PGCOURIER_RETRY_SCHEDULE", "5s,often")
    monkeypatch.setenv("PGCOURIER_MAX_IN_FLIGHT", "0")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    problems = str(info.value).split("; ")
    assert len(problems) == 3
    assert problems[0].startswith("PGCOURIER_POLL_INTERVAL: 'soon' is not a duration")
    assert problems[1].startswith("PGCOURIER_RETRY_SCHEDULE: 'often' is not a duration")
    assert problems[2].startswith("PGCOURIER_MAX_IN_FLIGHT:")


def test_lease_must_outlive_two_delivery_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_LEASE", "15s")
    with pytest.raises(ConfigurationError, match=r"lease \(15s\) must be at least twice"):
        load_settings()
