"""How the default run splits the tests over its two workers (tests/scheduling.py)."""

from __future__ import annotations

from pathlib import Path

from tests.scheduling import CONCURRENT_SAFE, unit_of_work

INTEGRATION = Path(__file__).parent.parent / "integration"


def test_every_concurrent_safe_name_is_a_test_file() -> None:
    # A misspelt or deleted name would silently do nothing (its file would stay serial, or a
    # new file of that name would be concurrent-safe without anyone deciding it).
    files = {p.name for p in INTEGRATION.glob("test_*.py")}
    assert files >= CONCURRENT_SAFE, sorted(CONCURRENT_SAFE - files)
    assert files - CONCURRENT_SAFE, "no serial file left: the restarts and latency tests are"


def test_serial_files_are_one_unit_and_the_others_one_unit_each() -> None:
    assert unit_of_work("tests/integration/test_restarts.py::test_x[restart_fast]") == "serial"
    assert unit_of_work("tests/integration/test_relay.py::test_y") == "serial"
    assert (
        unit_of_work("tests/integration/test_plans.py::test_z[claim-stale]")
        == "tests/integration/test_plans.py"
    )
    assert unit_of_work("tests/unit/test_signing.py::test_v[a@b]") == "tests/unit/test_signing.py"
    # A new integration file is serial until someone lists it.
    assert unit_of_work("tests/integration/test_not_written_yet.py::test_w") == "serial"
