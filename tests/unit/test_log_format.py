"""PGCOURIER_LOG_FORMAT: ``auto`` writes JSON lines off a terminal and console lines on one;
``json`` and ``console`` force either. (The process-level side, with a real pipe, is in
``tests/integration/test_settings_wiring.py``.)"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from pgcourier.logs import configure_logging


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _log_once(fmt: str, stream: io.StringIO) -> str:
    configure_logging("info", fmt, stream=stream)
    structlog.get_logger("test").info("hello", n=1)
    return stream.getvalue().strip()


@pytest.mark.parametrize(
    ("fmt", "stream", "is_json"),
    [
        ("auto", io.StringIO(), True),
        ("auto", Terminal(), False),
        ("json", Terminal(), True),
        ("console", io.StringIO(), False),
    ],
    ids=["auto-pipe", "auto-terminal", "json-terminal", "console-pipe"],
)
def test_log_format(fmt: str, stream: io.StringIO, is_json: bool) -> None:
    line = _log_once(fmt, stream)
    assert "hello" in line
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if is_json:
        assert record is not None
        assert (record["event"], record["n"], record["level"]) == ("hello", 1, "info")
    else:
        assert record is None
