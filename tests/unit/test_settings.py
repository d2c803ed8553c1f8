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


GOOD_TOKEN = "k" * 32


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_an_empty_admin_token_is_refused_not_taken_as_no_token(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # PGCOURIER_ADMIN_TOKEN= once passed the start-up check (not None) and then disabled the
    # request check (empty): an admin API open to the network.
    monkeypatch.setenv("PGCOURIER_ADMIN_TOKEN", value)
    monkeypatch.setenv("PGCOURIER_ADMIN_HOST", "0.0.0.0")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    [problem] = str(info.value).split("; ")
    assert problem.startswith("PGCOURIER_ADMIN_TOKEN: ")
    assert "empty" in problem
    assert "secrets.token_urlsafe(32)" in problem


def test_a_short_admin_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_ADMIN_TOKEN", "s3cret")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    [problem] = str(info.value).split("; ")
    assert problem.startswith("PGCOURIER_ADMIN_TOKEN: ")
    assert "at least 32 characters" in problem
    assert "secrets.token_urlsafe(32)" in problem
    assert "s3cret" not in problem  # a secret is never echoed, not even a bad one


@pytest.mark.parametrize("value", [GOOD_TOKEN[:-1] + " x", GOOD_TOKEN + "é", " " + GOOD_TOKEN])
def test_an_admin_token_must_fit_in_an_authorization_header(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Spaces and non-ASCII cannot be sent (or compared) as a bearer token: such a token would
    # lock every client out, or be matched differently than written.
    monkeypatch.setenv("PGCOURIER_ADMIN_TOKEN", value)
    with pytest.raises(ConfigurationError, match=r"^PGCOURIER_ADMIN_TOKEN: .*printable ASCII"):
        load_settings()


def test_a_long_admin_token_opens_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCOURIER_ADMIN_TOKEN", GOOD_TOKEN)
    monkeypatch.setenv("PGCOURIER_ADMIN_HOST", "0.0.0.0")
    s = load_settings()
    assert s.admin_token_value == GOOD_TOKEN
    monkeypatch.delenv("PGCOURIER_ADMIN_TOKEN")
    monkeypatch.delenv("PGCOURIER_ADMIN_HOST")
    assert load_settings().admin_token_value is None
