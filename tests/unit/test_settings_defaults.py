"""The README's settings table against :class:`Settings`, and settings against what the relay gets.

The table is what operators read; a default that drifts from the code (or a row naming a setting
that does not exist) misleads them silently, so every row is parsed and checked here. The second
half checks that :mod:`pgcourier.runtime` hands each relay setting on, field by field, with
values no default could match by accident (the process-level tests in
``tests/integration/test_settings_wiring.py`` check the same path from environment variables).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import SecretStr, TypeAdapter

from pgcourier import runtime
from pgcourier.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"

# Fields the README's table does not list on purpose (none today).
UNDOCUMENTED: set[str] = set()


def settings_table() -> dict[str, str]:
    """``{field name: default as written}`` from the README's "## Settings" table.

    Rows may name two variables at once (``ADMIN_HOST` / `ADMIN_PORT``) with two defaults
    (``127.0.0.1` / `8787``); a default written without backticks is a word (``unset``,
    ``empty``).
    """
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue  # prose, the header row or the separator
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1]) or [cells[1]]
        assert len(names) == len(defaults), f"cannot pair names and defaults in: {line}"
        for name, default in zip(names, defaults, strict=True):
            rows[name.lower()] = default
    return rows


def as_setting(field: str, written: str) -> Any:
    """What the README's text means for ``field``, parsed by the field's own validators."""
    if written == "unset":
        return None
    if written == "empty":
        written = ""
    info = Settings.model_fields[field]
    kind: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    return adapter.validate_python(written)


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings() as a fresh process with no PGCOURIER_ variables sees them."""
    import os

    for name in list(os.environ):
        if name.startswith("PGCOURIER_"):
            monkeypatch.delenv(name)
    return Settings()


def test_the_table_is_found_and_names_only_real_settings() -> None:
    rows = settings_table()
    assert len(rows) >= 25  # the table was parsed, not skipped
    unknown = set(rows) - set(Settings.model_fields)
    assert not unknown, f"README rows with no setting behind them: {sorted(unknown)}"


@pytest.mark.parametrize("field", sorted(settings_table()))
def test_every_default_in_the_readme_table_is_the_code_default(
    field: str, defaults: Settings
) -> None:
    written = settings_table()[field]
    actual = getattr(defaults, field)
    if isinstance(actual, SecretStr):
        actual = actual.get_secret_value()
    assert as_setting(field, written) == actual, (
        f"README says PGCOURIER_{field.upper()} defaults to {written!r}; Settings() has {actual!r}"
    )


def test_documented_and_undocumented_settings_add_up() -> None:
    # A new setting must either get a README row or be listed in UNDOCUMENTED deliberately.
    documented = set(settings_table())
    assert documented | UNDOCUMENTED == set(Settings.model_fields)
    assert not documented & UNDOCUMENTED


def test_every_setting_has_a_readme_row() -> None:
    assert set(Settings.model_fields) <= set(settings_table())


def test_the_durations_in_the_table_are_parsed_not_compared_as_text(defaults: Settings) -> None:
    # Guard the guard: "5d" must mean 432000 s, so a changed unit in the code is caught.
    assert as_setting("disable_after", "5d") == defaults.disable_after == 5 * 86400
    assert as_setting("circuit_max_cooldown", "1h") != as_setting("circuit_max_cooldown", "1m")


# -- what runtime hands the relay -----------------------------------------------------------------


def _unusual() -> Settings:
    """Settings where every relay-facing value differs from its default and from each other."""
    values: dict[str, Any] = {
        "database_url": "postgresql://unused",
        "poll_interval": "1.5s",
        "retry_schedule": "7s,11s",
        "retry_jitter": 0.37,
        "max_in_flight": 13,
        "delivery_timeout": "3s",
        "lease": "17s",
        "shutdown_timeout": "4s",
        "completion_flush_interval": "0.009",
        "retry_after_cap": "123s",
        "circuit_failures": 7,
        "circuit_cooldown": "19s",
        "circuit_max_cooldown": "23m",
        "disable_after": "2d",
    }
    return Settings(**values)


def test_relay_config_takes_every_value_from_the_settings() -> None:
    config = runtime.relay_config(_unusual())
    assert (
        config.poll_interval,
        config.retry_schedule,
        config.retry_jitter,
        config.max_in_flight,
        config.lease,
        config.shutdown_timeout,
        config.completion_flush_interval,
        config.retry_after_cap,
    ) == (1.5, (7.0, 11.0), 0.37, 13, 17.0, 4.0, 0.009, 123.0)


def test_circuit_config_takes_every_value_from_the_settings() -> None:
    config = runtime.circuit_config(_unusual())
    assert (config.failures, config.cooldown, config.max_cooldown, config.disable_after) == (
        7,
        19.0,
        23 * 60.0,
        2 * 86400.0,
    )


def test_disable_after_zero_means_never() -> None:
    values: dict[str, Any] = {"database_url": "postgresql://unused", "disable_after": "0"}
    settings = Settings(**values)
    assert runtime.circuit_config(settings).disable_after is None
